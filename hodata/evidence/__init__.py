"""hodata.evidence: 2D evidence and hand initialisation of a clip -> ClipEvidence (paper Sec. 3.1-3.2).

- types: ClipEvidence / HandEvidence, the container fitting receives (boxes, masks with hand
  occlusion, keypoints, one HandInit per hand, provenance of each part);
- gt: ground truth as one provider; detected: MediaPipe hands + motpy tracking + keypoint
  hand init + GrabCut masks; files: outputs of external models in a documented format;
- building blocks: mediapipe_hands, keypoint_init, tracking, masks, hand_init (simulated
  estimator, weak perspective), draw (pictures for a person to check).
"""
