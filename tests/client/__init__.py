"""SDK tests: ctrd.client against ctrd and containerd."""
