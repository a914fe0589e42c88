"""Mesh utilities for the hand models: iso-surface extraction, wrist ring, closing.

Plain numpy (run once when a model is built, never in a hot path).
"""

from __future__ import annotations

import numpy as np

# Kuhn (Freudenthal) split of the unit cube into 6 tetrahedra along the 000-111 diagonal.
# Neighbouring cubes split their shared faces along the same diagonal, so the surface that
# marching tetrahedra extracts is a closed 2-manifold wherever the field is negative only
# strictly inside the grid.
_CUBE_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # index = 4i+2j+k
_KUHN_TETS = np.array(
    [
        [0, 4, 6, 7], [0, 4, 5, 7], [0, 2, 6, 7],
        [0, 2, 3, 7], [0, 1, 5, 7], [0, 1, 3, 7],
    ]
)


def marching_tetrahedra(values: np.ndarray, origin: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero level set of a sampled field, negative inside.

    values: (nx, ny, nz) samples at origin + spacing * (i, j, k); the border samples must be
    positive (outside). Returns vertices (N, 3) and faces (F, 3) with outward (counter-
    clockwise seen from outside) winding; vertices are shared (one per crossed grid edge).
    """
    values = np.where(values == 0.0, 1e-12, values)
    nx, ny, nz = values.shape
    inside = values < 0
    # Cubes whose corners disagree in sign are the only ones that produce faces.
    corner_inside = np.stack(
        [inside[i : nx - 1 + i, j : ny - 1 + j, k : nz - 1 + k] for i, j, k in _CUBE_CORNERS], axis=-1
    )
    count = corner_inside.sum(-1)
    cubes = np.argwhere((count > 0) & (count < 8))  # (C, 3)
    corner_idx = cubes[:, None, :] + _CUBE_CORNERS[None]  # (C, 8, 3)
    flat = np.ravel_multi_index(corner_idx.reshape(-1, 3).T, values.shape).reshape(-1, 8)
    tets = flat[:, _KUHN_TETS].reshape(-1, 4)  # (C*6, 4) global sample ids
    tv = values.ravel()[tets]
    tin = tv < 0
    n_in = tin.sum(-1)
    tets, tv, tin, n_in = (a[(n_in > 0) & (n_in < 4)] for a in (tets, tv, tin, n_in))

    # Sort each tet's corners so inside corners come first: then every case is a prefix.
    order = np.argsort(~tin, axis=1, kind="stable")
    tets = np.take_along_axis(tets, order, 1)
    tv = np.take_along_axis(tv, order, 1)

    edges_a, edges_b, tri_edges = [], [], []

    def add(sel: np.ndarray, pairs: list[tuple[int, int]], tris: list[tuple[int, int, int]]) -> None:
        base = sum(len(e) for e in edges_a)
        n = int(sel.sum())
        if n == 0:
            return
        for a, b in pairs:
            edges_a.append(tets[sel, a])
            edges_b.append(tets[sel, b])
        ids = base + np.arange(len(pairs))[None, :] * n + np.arange(n)[:, None]  # (n, len(pairs))
        for tri in tris:
            tri_edges.append(ids[:, list(tri)])

    add(n_in == 1, [(0, 1), (0, 2), (0, 3)], [(0, 1, 2)])
    add(n_in == 3, [(0, 3), (1, 3), (2, 3)], [(0, 1, 2)])
    add(n_in == 2, [(0, 2), (0, 3), (1, 3), (1, 2)], [(0, 1, 2), (0, 2, 3)])

    ea = np.concatenate(edges_a)
    eb = np.concatenate(edges_b)
    faces = np.concatenate(tri_edges)
    # One vertex per grid edge: key the crossing by its (sorted) sample pair.
    key = np.minimum(ea, eb) * values.size + np.maximum(ea, eb)
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    ea, eb = ea[first], eb[first]
    va, vb = values.ravel()[ea], values.ravel()[eb]
    t = va / (va - vb)
    pa = np.stack(np.unravel_index(ea, values.shape), -1).astype(np.float64)
    pb = np.stack(np.unravel_index(eb, values.shape), -1).astype(np.float64)
    vertices = origin + spacing * (pa + t[:, None] * (pb - pa))
    faces = inverse[faces]

    # Orient each triangle so its normal points away from an inside corner p of its
    # tetrahedron: det(q1 - p, q2 - p, q3 - p) > 0. The sign does not depend on where the
    # crossings lie on their edges (the section of a tetrahedron by the linear field's zero
    # plane stays a non-degenerate convex polygon), so it is evaluated exactly at the edge
    # midpoints in integer grid units, immune to slivers.
    grid_pts = lambda ids: np.stack(np.unravel_index(ids, values.shape), -1).astype(np.int64)
    mids = (grid_pts(ea) + grid_pts(eb))[faces]  # (F, 3, 3), twice the midpoints
    tri_in = []
    for sel_count, n_tris in ((1, 1), (3, 1), (2, 2)):
        tri_in.extend([tets[n_in == sel_count, 0]] * n_tris)
    p_in = 2 * grid_pts(np.concatenate(tri_in))
    d = mids - p_in[:, None, :]
    det = (d[:, 0] * np.cross(d[:, 1], d[:, 2])).sum(-1)
    flip = det < 0
    faces[flip] = faces[flip][:, ::-1]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return vertices, faces[keep]


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Open boundary loops of a triangle mesh, each ordered along its half-edges.

    faces: (F, 3). A boundary half-edge (a, b) belongs to one face only; the loop follows
    a -> b, so it runs in the faces' winding direction.
    """
    half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = {tuple(e) for e in half.tolist()}
    nxt: dict[int, int] = {}
    for a, b in half.tolist():
        if (b, a) not in key:
            if a in nxt:
                raise ValueError(f"vertex {a} starts two boundary edges: the mesh is not manifold there")
            nxt[a] = b
    loops = []
    while nxt:
        start = min(nxt)
        loop = [start]
        v = nxt.pop(start)
        while v != start:
            loop.append(v)
            v = nxt.pop(v)
        loops.append(np.array(loop))
    return loops


def _ear_clip(points2d: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangulate a simple polygon (R, 2) given in order; returns index triples in the
    polygon's own order. Greedy: at each step clips the valid ear with the largest minimum
    angle, which avoids slivers on the near-convex wrist ring."""
    idx = list(range(len(points2d)))
    area = 0.5 * sum(
        points2d[i, 0] * points2d[(i + 1) % len(idx), 1] - points2d[(i + 1) % len(idx), 0] * points2d[i, 1]
        for i in range(len(idx))
    )
    sign = 1.0 if area > 0 else -1.0
    tris = []
    while len(idx) > 3:
        best, best_q = None, -1.0
        for n in range(len(idx)):
            i0, i1, i2 = idx[n - 1], idx[n], idx[(n + 1) % len(idx)]
            a, b, c = points2d[i0], points2d[i1], points2d[i2]
            cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
            if cross * sign <= 0:
                continue  # reflex vertex
            others = [points2d[j] for j in idx if j not in (i0, i1, i2)]
            if any(_in_triangle(p, a, b, c) for p in others):
                continue
            q = _min_angle(a, b, c)
            if q > best_q:
                best, best_q = n, q
        if best is None:  # numerically degenerate ring: fall back to a fan
            best = 1
        tris.append((idx[best - 1], idx[best], idx[(best + 1) % len(idx)]))
        idx.pop(best)
    tris.append((idx[0], idx[1], idx[2]))
    return tris


def _in_triangle(p, a, b, c) -> bool:
    def s(p1, p2, p3):
        return (p1[0] - p3[0]) * (p2[1] - p3[1]) - (p2[0] - p3[0]) * (p1[1] - p3[1])

    d1, d2, d3 = s(p, a, b), s(p, b, c), s(p, c, a)
    neg = (d1 < 0) or (d2 < 0) or (d3 < 0)
    pos = (d1 > 0) or (d2 > 0) or (d3 > 0)
    return not (neg and pos)


def _min_angle(a, b, c) -> float:
    def ang(p, q, r):
        u, v = q - p, r - p
        cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30))
        return np.arccos(np.clip(cos, -1.0, 1.0))

    return min(ang(a, b, c), ang(b, c, a), ang(c, a, b))


def wrist_ring(faces: np.ndarray) -> np.ndarray:
    """The single open boundary loop of a hand mesh (R,), ordered along the faces' winding.

    Raises ValueError unless the mesh has exactly one boundary loop (MANO's wrist opening).
    """
    loops = boundary_loops(faces)
    if len(loops) != 1:
        raise ValueError(f"expected one open boundary loop (the wrist), found {len(loops)}")
    return loops[0]


def close_wrist(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces (F + R - 2, 3) that close the wrist opening without adding vertices.

    The ring of R vertices is projected onto its least-squares plane and ear-clipped there;
    the cap triangles run against the ring's half-edges, so the closed mesh keeps one
    consistent (outward) winding. MANO's 16-vertex ring gives 1538 + 14 = 1552 faces.
    vertices: (V, 3) rest-pose vertices; faces: (F, 3).
    """
    ring = wrist_ring(faces)
    pts = vertices[ring]
    centred = pts - pts.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    uv = centred @ vt[:2].T
    cap_order = ring[::-1]
    tris = _ear_clip(uv[::-1])
    cap = np.array([[cap_order[a], cap_order[b], cap_order[c]] for a, b, c in tris], dtype=faces.dtype)
    return np.concatenate([faces, cap], axis=0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3)."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    fn = np.cross(v1 - v0, v2 - v0)
    vn = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(vn, faces[:, i], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-30)


def vertex_adjacency(faces: np.ndarray, num_vertices: int):
    """Row-normalised vertex adjacency (scipy.sparse CSR, V x V) for Laplacian smoothing."""
    import scipy.sparse as sp

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices, num_vertices)).tocsr()
    adj.data[:] = 1.0
    deg = np.asarray(adj.sum(1)).ravel()
    return sp.diags(1.0 / np.maximum(deg, 1)) @ adj
