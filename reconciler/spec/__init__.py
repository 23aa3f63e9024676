"""The desired side: the experiment file, its layout and its units."""
