"""Small networks written inline for the theory tests, independent of the shipped specs."""

GELU_MLP = """
input: 6
network:
  - Linear: 12
  - GELU
  - Linear: 8
  - GELU
  - Linear: 4
"""

RESIDUAL = """
input: 6
network:
  - Linear: {out: 8, name: embed}
  - tare: 2
    body:
      - residual: 3
        name: blocks
        body: [Linear: 8, GELU, Linear: 8]
  - Linear: {out: 4, name: head}
"""

LAYERNORM = """
input: [3, 6]
network: [LayerNorm, Linear: 6, GELU, Linear: 4]
"""

CNN = """
input: [2, 8, 8]
network:
  - Conv2D: {out: 4, kernel: 3, padding: 1}
  - ReLU
  - AvgPool: 2
  - Conv2D: {out: 6, kernel: 2, stride: 2}
  - GELU
  - Flatten
  - Linear: 5
"""

ATTENTION_BODY = """
          - tuple:
              - [Linear: {out: 8, name: v}, SplitHeads: heads]
              - - tuple:
                    - [Linear: {out: 8, name: q}, SplitHeads: heads, RoPE]
                    - [Linear: {out: 8, name: k}, SplitHeads: heads, RoPE]
                - AttentionQK
                - CausalMask
                - Softmax: 1
          - scale: 1/3
            body: ApplyScores
          - MergeHeads
          - Linear: {out: 8, name: o}
"""

# A residual attention layer, then GELU and a head: heads = 2, inputs (4, 8).
ATTENTION = (
    """
params: {heads: 2}
input: [4, 8]
network:
  - sum:
      - scale: 3/4
        body: Identity
      - scale: 1/4
        body:
"""
    + ATTENTION_BODY
    + """
  - GELU
  - Linear: {out: 5, name: head}
"""
)
