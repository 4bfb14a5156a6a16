"""Analysis jobs (image pipeline, modelling) register here with ``studies.jobs.task``."""
