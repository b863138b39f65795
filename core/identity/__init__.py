"""Cards and customers: the card lifecycle, issuing, sync from the central store, the records a
store returns, the seed file, the standalone store and ID-number checks."""
