# pragma version ~=0.4.1
"""
@title A tiny image classifier, as a stateless job (docs/jobs.md)
@notice 4x4 grey images (16 pixels, 0-255) into three classes: 0 a vertical bar, 1 a horizontal bar,
        2 a diagonal.  One integer linear layer and an argmax: the matrix
        multiply is the work, the code touches no storage and sends no messages, so any node can
        re-run it to check a worker's answer.  examples/jobs/images.json holds a few images.
"""

W: constant(int256[3][16]) = [
    [-50, -50, 150],
    [100, -50, -50],
    [100, -50, -50],
    [-50, -50, -50],
    [-50, 100, -50],
    [100, 100, 150],
    [100, 100, -50],
    [-50, 100, -50],
    [-50, 100, -50],
    [100, 100, -50],
    [100, 100, 150],
    [-50, 100, -50],
    [-50, -50, -50],
    [100, -50, -50],
    [100, -50, -50],
    [-50, -50, 150],
]
B: constant(int256[3]) = [0, 0, 0]


@external
@pure
def classify(pixels: uint256[16]) -> (uint256, int256[3]):
    scores: int256[3] = B
    for i: uint256 in range(16):
        assert pixels[i] <= 255, "a pixel is 0..255"
        p: int256 = convert(pixels[i], int256)
        for c: uint256 in range(3):
            scores[c] += W[i][c] * p
    best: uint256 = 0
    for c: uint256 in range(1, 3):
        if scores[c] > scores[best]:
            best = c
    return best, scores
