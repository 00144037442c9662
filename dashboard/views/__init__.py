"""The dashboard's views, one module per page family; each stays thin: fetch or 404, read, render or redirect."""
