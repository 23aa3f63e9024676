"""One order of job ids, for every place that sorts them (backends, observation, reports), and one ownership by tag."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from reconciler.jobs import Job, Snapshot, job_order, unit_of_tag
from reconciler.spec.units import tag_for, tag_prefix

NUMBERS = st.integers(min_value=0, max_value=10**12)
# Ids as schedulers and journals write them, and some no scheduler writes (a corrupt journal).
IDS = st.one_of(
    NUMBERS.map(str),
    st.tuples(NUMBERS, NUMBERS, st.sampled_from("_+")).map(lambda t: f"{t[0]}{t[2]}{t[1]}"),
    NUMBERS.map(lambda n: f"{n}_[1-5]"),
    st.text(max_size=8),
    st.text(alphabet="0123456789²³¹٣۴߄०_+", max_size=6),
)


@given(st.text())
def test_any_text_is_ordered_never_raises(text: str) -> None:
    key = job_order(text)
    assert key[2] == text


@given(NUMBERS, NUMBERS)
def test_plain_ids_sort_as_numbers(a: int, b: int) -> None:
    assert (job_order(str(a)) < job_order(str(b))) == (a < b)


@given(NUMBERS, NUMBERS, NUMBERS, st.sampled_from("_+"))
def test_array_tasks_and_het_components_follow_their_job_by_index(job: int, i: int, j: int, sep: str) -> None:
    assert job_order(str(job)) < job_order(f"{job}{sep}{i}") < job_order(str(job + 1))
    assert (job_order(f"{job}{sep}{i}") < job_order(f"{job}{sep}{j}")) == (i < j)


@given(st.lists(IDS, unique=True, max_size=12), st.randoms(use_true_random=False))
def test_the_order_is_total_whatever_the_input_order(ids: list[str], rnd: random.Random) -> None:
    shuffled = ids[:]
    rnd.shuffle(shuffled)
    assert sorted(ids, key=job_order) == sorted(shuffled, key=job_order)
    assert len({job_order(i) for i in ids}) == len(ids)


def test_unicode_digits_are_not_numbers() -> None:
    # "²".isdigit() is true and int("²") raises: such an id once failed every pass.
    assert sorted(["10", "²", "9", "٣", "123_4", "123_10", "123", "123+0"], key=job_order) == [
        "²", "٣", "9", "10", "123", "123+0", "123_4", "123_10"
    ]


def test_jobs_of_one_tag_come_in_submission_order() -> None:
    jobs = {i: Job(job_id=i, state="COMPLETED", tag="e/u") for i in ("10", "9", "²", "100")}
    assert [j.job_id for j in Snapshot(jobs=jobs).by_tag("e/u")] == ["²", "9", "10", "100"]


@given(st.text(min_size=1), st.text(), st.text(min_size=1))
def test_a_job_belongs_to_the_unit_its_tag_names_under_the_experiment(experiment: str, key: str, other: str) -> None:
    assert unit_of_tag(tag_for(experiment, key), tag_prefix(experiment)) == key
    if not other.startswith(experiment):  # another experiment's job, whatever its unit
        assert unit_of_tag(tag_for(other, key), tag_prefix(experiment)) is None
    assert unit_of_tag(None, tag_prefix(experiment)) is None  # a job submitted without a tag
