"""CuriosityCore: the pure consumer that turns gap signals into questions."""
