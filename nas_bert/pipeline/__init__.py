"""`python search.py +pipeline=<name>`: the whole method as steps, then the study report (`run.run_pipeline`)."""
