"""Model: the mapping network from landmark images to W+ offsets (``mapper``: architecture, saving, loading) and its
training loop, single process or torchrun (``training``)."""
