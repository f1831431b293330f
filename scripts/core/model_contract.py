"""model.json: how to feed the frozen model (and, through ir.json, its IRs) and what it returns."""
from scripts.core.contract import deployment_fields
from scripts.core.images import preprocessing_contract


def model_contract(info, labels, central_fraction, resize, views, hidden_units, calibration_json=None):
    """model.json: how to feed the frozen model and what it returns."""
    return {
        "schema_version": 2,
        "input_node": "input",
        "output_node": "final_result",
        "output": "float32 [N, classes] calibrated softmax probabilities (softmax(logits / temperature), "
                  "the views' mean), classes in `labels` order",
        "preprocessing": preprocessing_contract(info["input_size"], info["input_range"],
                                                       central_fraction, resize),
        "test_time_views": list(views),
        "labels": labels,
        "backbone": info,
        "hidden_units": hidden_units,
        **deployment_fields(calibration_json),
        "untrained_backbone": info["untrained"],
        "note": info["note"],
    }
