"""DSpark / DFlash / EAGLE-3 / MTP-1 drafter training toolkit (PyTorch).

The module layout follows docs/drafter-format.md (the contract with the C++ runtime):
  config        drafter.json <-> DrafterConfig
  layers        RMSNorm, RoPE, attention, MLP shared by all drafters
  block_drafter dspark / dflash parallel backbone + sequential (Markov) and confidence heads
  chain_drafter eagle3 / mtp1 single autoregressive layer over fused target features
  masks         anchor sampling, eval mask, training attention mask
  losses        DSpark / DFlash / EAGLE-3 TTT losses
  export        drafter folder writer and reader (safetensors, sharded)
"""
