"""HF checkpoint <-> Flax params: name resolution, name maps, strict merge, overrides."""
