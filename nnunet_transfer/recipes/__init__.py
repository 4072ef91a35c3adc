"""Paper recipes: each published pipeline as data (datasets, commands, settings) and the runs that compare its arms."""
