"""Readers: objects in, Arrow record batches out, with every bad input named by line."""
