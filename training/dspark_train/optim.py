"""AdamW (lr 6e-4, weight decay 0, default betas/eps) with linear warmup over 4% of the steps
then cosine decay to 0 (method doc 2.4); the schedule is a pure function of the step so a
resumed run continues it exactly."""
import math

import torch


def lr_factor(step, total_steps, warmup_frac=0.04):
    warm = max(1, int(round(warmup_frac * total_steps)))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total_steps - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model, lr, total_steps, warmup_frac=0.04):
    params = [p for p in model.parameters() if p.requires_grad]
    # fused on CUDA: one kernel for the whole update instead of a few per tensor (the training
    # step is bound by launch overhead at this model size); the CPU keeps the reference loop
    fused = bool(params) and all(p.is_cuda for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup_frac))
    return opt, sched
