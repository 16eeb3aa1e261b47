"""Shared pytest setup: make the collection importable as ansible_collections.cloudhv.ch.

The repository is linked into build/collections/ansible_collections/cloudhv/ch, which is also
what ANSIBLE_COLLECTIONS_PATH points at for the integration tests.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, 'build', 'collections')


def _link_collection():
    ns = os.path.join(COLLECTIONS, 'ansible_collections', 'cloudhv')
    link = os.path.join(ns, 'ch')
    os.makedirs(ns, exist_ok=True)
    if not os.path.islink(link):
        try:
            os.symlink(REPO, link)
        except FileExistsError:
            pass
    return link


_link_collection()
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
os.environ.setdefault('ANSIBLE_COLLECTIONS_PATH', COLLECTIONS)
