"""ctrdctl tests."""
