"""Mirror target, dirty logs and live move tests (issue 7)."""
