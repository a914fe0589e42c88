"""Batched, device-agnostic geometry: cameras, rotations, rendering, signed distances, meshes."""
