"""Pulls an artifact with PyPI `oras` (plain HTTP, loopback) into a directory and prints the
files it wrote, one per line.

usage: oras_pull.py REFERENCE OUTDIR
"""
import sys

import oras.client

client = oras.client.OrasClient(insecure=True)
for path in client.pull(target=sys.argv[1], outdir=sys.argv[2]):
    print(path)
