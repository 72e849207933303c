"""Stage configs (ml_collections). Each file's `get_config(arg)` takes `k=v,flag` arguments."""
