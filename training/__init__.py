"""Training of the feedforward stylizing network (``python -m training.train``)."""
