"""The phase processor: a worker process that advances running ramps phase by phase."""
