"""The 🤗 Trainer, logging the two loss components."""

from __future__ import annotations

from transformers import Trainer


class DiaLlamaTrainer(Trainer):
    """Logs `lm_loss` and `dp_loss` beside the total loss (means over the logging window)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._component_sums: dict[str, float] = {}
        self._component_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "id"}
        outputs = model(**inputs)
        if model.training:
            for name in ("lm_loss", "dp_loss"):
                value = getattr(outputs, name, None)
                if value is not None:
                    self._component_sums[name] = self._component_sums.get(name, 0.0) + float(value.detach())
            self._component_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs and self._component_count:
            for name, total in self._component_sums.items():
                logs[name] = round(total / self._component_count, 6)
            self._component_sums, self._component_count = {}, 0
        super().log(logs, start_time)


__all__ = ["DiaLlamaTrainer"]
