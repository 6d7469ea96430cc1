"""Detection: videos or cached features -> labelled time segments (ActivityNet results JSON), timeline plots."""
