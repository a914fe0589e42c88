"""Joint order, fingertip vertices and file names shared by MANO and the open hand.

Joint order of every `HandOutput.joints` (21 joints): the 16 MANO joints in MANO's own order,
then the 5 fingertip vertices, thumb first:

    0 wrist
    1 index MCP,  2 index PIP,  3 index DIP
    4 middle MCP, 5 middle PIP, 6 middle DIP
    7 little MCP, 8 little PIP, 9 little DIP
    10 ring MCP,  11 ring PIP,  12 ring DIP
    13 thumb CMC, 14 thumb MCP, 15 thumb IP
    16 thumb tip, 17 index tip, 18 middle tip, 19 ring tip, 20 little tip

`THUMB_FIRST_ORDER` reorders them into the common "thumb-first" convention
(wrist, then thumb, index, middle, ring, little, each base-to-tip):
`joints[:, THUMB_FIRST_ORDER]`.
"""

from __future__ import annotations

JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index_mcp", "index_pip", "index_dip",
    "middle_mcp", "middle_pip", "middle_dip",
    "little_mcp", "little_pip", "little_dip",
    "ring_mcp", "ring_pip", "ring_dip",
    "thumb_cmc", "thumb_mcp", "thumb_ip",
    "thumb_tip", "index_tip", "middle_tip", "ring_tip", "little_tip",
)

NUM_MANO_JOINTS = 16
NUM_JOINTS = 21
NUM_BETAS = 10
POSE_DIM = 45  # 15 non-root joints x 3 axis-angle

# MANO's kinematic tree: parent of each of the 16 joints (-1 for the wrist).
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Fingertip vertices of the official MANO meshes, thumb, index, middle, ring, little.
MANO_TIP_VERTEX_IDS: dict[str, tuple[int, ...]] = {
    "right": (745, 317, 444, 556, 673),
    "left": (745, 317, 445, 556, 673),
}

THUMB_FIRST_ORDER: tuple[int, ...] = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# Keys a MANO-format pickle must hold for the layer (REFERENCE.md section 4).
REQUIRED_KEYS: tuple[str, ...] = (
    "v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
    "hands_components", "hands_mean",
)

MANO_MODEL_NAME = "mano"
OPEN_HAND_MODEL_NAME = "open-hand-v1"


def mano_filename(side: str) -> str:
    """"right" -> "MANO_RIGHT.pkl"."""
    return f"MANO_{side.upper()}.pkl"
