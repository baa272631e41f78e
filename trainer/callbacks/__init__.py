"""The project's Keras callbacks, one per file, as Keras keeps its own."""
