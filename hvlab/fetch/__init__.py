"""Fetch stage: kernel sources into one shared git object store."""
