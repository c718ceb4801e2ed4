"""Registry log evidence: parsing, the reader shipped to the registry host, remote access, truncation."""
