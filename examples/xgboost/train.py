"""Your own training code for Kiln, with XGBoost's own training loop (xgboost.train and a callback).

    kiln train -t TRAINING_SET --entry-point examples/xgboost/train.py [-p max_depth=4]
    kiln tune  -t TRAINING_SET --entry-point examples/xgboost/train.py -n 8

The booster it returns goes through everything Kiln's own families do, `kiln compile` included: predict() answers
what the booster predicts, so its trees compile to tensor operations for ARM, x86 and CUDA.
"""

import xgboost as xgb

PARAMS = {  # what `kiln tune --entry-point` may search
    "eta": {"low": 0.02, "high": 0.4, "log": True},
    "max_depth": {"low": 2, "high": 8, "type": "int"},
    "min_child_weight": {"low": 0.5, "high": 10.0, "log": True},
}
DEFAULTS = {"eta": 0.1, "max_depth": 4, "min_child_weight": 1.0}
ROUNDS_PER_REPORT = 20
MAX_ITERATIONS = 10  # reports a run makes: one per ROUNDS_PER_REPORT boosting rounds
OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}


class Report(xgb.callback.TrainingCallback):
    """Kiln scores the booster on the validation rows every ROUNDS_PER_REPORT rounds (and may end a tuning trial)."""

    def __init__(self, context):
        super().__init__()
        self.context = context

    def after_iteration(self, model, epoch, evals_log):
        if (epoch + 1) % ROUNDS_PER_REPORT == 0:
            self.context.report((epoch + 1) // ROUNDS_PER_REPORT, model)
        return False  # go on


def train(context):
    params = {"objective": OBJECTIVES[context.task], "eta": float(context.params["eta"]),
              "max_depth": int(context.params["max_depth"]),
              "min_child_weight": float(context.params["min_child_weight"]), "seed": context.seed}
    if context.task == "multiclass":
        params["num_class"] = len(context.classes)
    rows = xgb.DMatrix(context.x_train, label=context.y_train)
    return xgb.train(params, rows, num_boost_round=ROUNDS_PER_REPORT * MAX_ITERATIONS,
                     callbacks=[Report(context)])


def predict(model, x):
    return model.predict(xgb.DMatrix(x))  # P(positive) [N], class probabilities [N, K], or values [N]
