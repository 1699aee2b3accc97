"""Identity resolution: which identity values belong to one user, and that user's profile id.

Identity values (each `user_id`, each normalized `email`...) are the nodes of a graph, and an
event that holds several of them links them. A user is a connected component: `a-b` and `b-c`
make one user of `a`, `b` and `c`. Components are found with numpy: each round hooks the root
of every edge's larger end under the smaller (a forest where a parent is never larger than its
child), then jumps pointers until each node points at its root; a few rounds settle graphs of
millions of edges.
"""

from __future__ import annotations

from typing import Any


def components(left: Any, right: Any, nodes: int) -> Any:
    """For each node 0..nodes-1, the smallest node of its component (an int64 array).

    Args:
        left: One end of each edge (node numbers).
        right: The other end.
        nodes: How many nodes there are; a node without edges is a component of its own.
    """
    import numpy as np

    parent = np.arange(nodes, dtype=np.int64)
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    while left.size:
        roots_left, roots_right = parent[left], parent[right]
        apart = roots_left != roots_right
        if not apart.any():
            break
        left, right = left[apart], right[apart]
        roots_left, roots_right = roots_left[apart], roots_right[apart]
        # Hook each larger root under the smaller one; several edges may hook the same root,
        # and the smallest wins. The others are joined in a later round.
        np.minimum.at(
            parent, np.maximum(roots_left, roots_right), np.minimum(roots_left, roots_right)
        )
        while True:  # pointer jumping: each node ends pointing at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def profile_ids(roots: Any, old_ids: Any) -> Any:
    """The profile id of each node, from its component's root and the ids from the last build.

    A component takes the smallest old id of its nodes: a user keeps their id, and users whose
    identities have merged take the smallest of theirs. An old id claimed by two components
    (a user split, when normalization rules change) stays with the one whose root is smallest.
    Components without an old id take new ids above every old one.

    Args:
        roots: For each node, the root of its component (from `components`).
        old_ids: For each node, its profile id in the last build, or -1.
    """
    import numpy as np

    nodes = len(roots)
    none = np.iinfo(np.int64).max
    smallest = np.full(nodes, none, dtype=np.int64)
    known = old_ids >= 0
    np.minimum.at(smallest, roots[known], old_ids[known])
    tops = np.flatnonzero(roots == np.arange(nodes))  # one node a component: its root
    claimed = smallest[tops]
    # An old id claimed twice: the first (smallest) root keeps it.
    order = np.lexsort((tops, claimed))
    taken = claimed[order]
    again = np.zeros(len(taken), dtype=bool)
    again[1:] = taken[1:] == taken[:-1]
    claimed[order[again]] = none
    fresh = claimed == none
    start = int(old_ids.max()) + 1 if nodes and known.any() else 1
    claimed[fresh] = np.arange(start, start + int(fresh.sum()), dtype=np.int64)
    ids = np.empty(nodes, dtype=np.int64)
    ids[tops] = claimed
    result: Any = ids[roots]
    return result
