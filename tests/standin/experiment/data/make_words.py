"""Generate words.json: capitalize a lowercase five-letter word (cruijff_kit's words_5L format)."""

from __future__ import annotations

import json
import random
from pathlib import Path

# Real English five-letter words, listed by first letter. Their natural skew (many s/c/b/p
# words, a single x word) matters: the demo's low-rank adapter learns frequent letters first.
WORDS = """
apple about above actor adult after again agent agree ahead alarm album alert alike alive
allow alone along alter amber among angel anger angle angry apart apron arena argue arise
armor array arrow aside asset audio audit avoid award aware
bacon badge baker basic basin beach beard beast begin being bench berry birth black blade
blame blank blast blend bless blind block blood bloom board boast bonus boost booth bound
brain brand brave bread break brick bride brief bring broad brook brown brush build bunch
burst buyer
cabin cable camel candy canoe cargo carry catch cause chain chair chalk charm chart chase
cheap check cheek chess chest chief child chill choir civic claim class clean clear clerk
click cliff climb clock close cloth cloud coach coast color coral couch count court cover
craft crane crash cream crest crowd crown crust curve cycle
daily dairy dance dealt death debut decay delay delta dense depth diary dirty ditch dizzy
dodge donor doubt dough dozen draft drain drama dream dress drift drill drink drive drone
drums dusty dwarf
eager eagle early earth easel eaten eight elbow elder elect elite empty enemy enjoy enter
entry equal error essay event every exact exist extra
fable facet faith false fancy feast fence ferry fever fiber field fifth fight final flame
flash fleet flock flood floor flour fluid flute focus forge forth forum found frame fresh
front frost fruit funny
giant given glass globe glory glove grace grade grain grand grant grape graph grass grave
great green greet grief grill grind group grove guard guess guest guide
habit happy harsh haste heart heavy hedge hello hinge hobby honey honor horse hotel house
human humor hurry
ideal image index inner input irony issue ivory
jelly jewel joint jolly judge juice jumbo
kayak kebab knife knock known koala
label labor large laser later laugh layer learn lease least leave legal lemon level light
limit linen liver lobby local lodge logic loose lover lower loyal lucky lunar lunch
magic major maker mango maple march match mayor medal melon mercy merit metal meter might
minor minus mirth model money month moral motor mount mouse mouth movie music
naive nerve never newly night ninja noble noise north noted novel nurse nylon
ocean offer often olive onion opera orbit order organ other otter outer owner oxide
paint panel paper party pasta patch pause peace peach pearl pedal penny phase phone photo
piano piece pilot pitch pixel pizza place plain plane plant plate plaza point polar porch
pound power press price pride prime print prize proof proud prune pulse punch pupil puppy
queen query quest quick quiet quilt quota quote
radar radio raise rally ranch range rapid raven reach react ready realm rebel refer relax
reply rider ridge rifle right rival river roast robin robot rocky rough round route royal
rugby ruler rural
sadly salad salon sauce scale scarf scene scope score scout screw sense serve seven shade
shake shape share shark sharp sheep shelf shell shift shine shirt shock shore short shout
sight silly since skill skirt slate sleep slice slide slope small smart smile smoke snack
snake solar solid solve sound south space spare spark speak speed spell spend spice spine
spoon sport spray squad stack staff stage stair stake stamp stand start state steam steel
stick still stock stone stool store storm story stove straw strip study style sugar suite
sunny super swamp sweet swift sword syrup
table taken taste teach teeth tempo thank theme thick thing think third thorn three throw
thumb tiger tight timer title toast today token tooth topic torch total touch tough tower
toxic trace track trade trail train trait treat trend trial tribe trick truck truly trust
truth tulip tuner twice twist
ulcer uncle under union unity until upper upset urban usage usual utter
valid value valve vapor vault venue verse video vigor vinyl viola virus visit vital vivid
vocal voice voter
wagon waist waste watch water weave wedge weird whale wheat wheel where while whisk white
whole width witch woman world worry worth wound woven wrist write wrong
xenon
yacht yeast yield young youth
zebra zesty zonal
"""

SEED = 14  # cruijff_kit's default seed
SPLITS = {"train": 200, "validation": 20, "test": 40}


def make_splits(seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """Shuffle the word list with `seed` and cut it into the train/validation/test splits."""
    words = sorted(set(WORDS.split()))
    random.Random(seed).shuffle(words)
    if len(words) < sum(SPLITS.values()):
        raise ValueError(f"only {len(words)} words for {sum(SPLITS.values())} samples")
    splits: dict[str, list[dict[str, str]]] = {}
    start = 0
    for name, size in SPLITS.items():
        chunk = words[start : start + size]
        splits[name] = [{"input": w, "output": w[0].upper() + w[1:]} for w in chunk]
        start += size
    return splits


def main() -> None:
    """Write words.json next to this script, one record per line like the cruijff fixtures."""
    out = Path(__file__).with_name("words.json")
    splits = make_splits()
    parts = []
    for name, records in splits.items():
        rows = ",\n".join(f"    {json.dumps(r)}" for r in records)
        parts.append(f'  "{name}": [\n{rows}\n  ]')
    out.write_text("{\n" + ",\n".join(parts) + "\n}\n")
    print(f"wrote {out} ({', '.join(f'{k}={len(v)}' for k, v in splits.items())})")


if __name__ == "__main__":
    main()
