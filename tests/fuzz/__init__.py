"""Fuzzing the decoders and the three APIs; the corpus of inputs that once broke them."""
