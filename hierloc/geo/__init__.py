"""Geography: the place hierarchy, boundaries, reverse lookup and the one haversine."""
