"""Your own training code for Kiln, with scikit-learn: gradient boosting with early stopping on the validation rows.

    kiln train -t TRAINING_SET --entry-point examples/sklearn/train.py [-p max_depth=4]

Kiln gives train() the training set split and encoded (numbers; missing values filled; text one-hot) and scores,
registers, explains and serves whatever predict() answers.
"""

from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

PARAMS = {  # what `kiln tune --entry-point` may search
    "learning_rate": {"low": 0.01, "high": 0.5, "log": True},
    "max_depth": {"low": 2, "high": 8, "type": "int"},
}
DEFAULTS = {"learning_rate": 0.1, "max_depth": 4}
MAX_ITERATIONS = 8  # reports a run makes: one per 25 boosting rounds


def train(context):
    kind = HistGradientBoostingRegressor if context.task == "regression" else HistGradientBoostingClassifier
    model = kind(learning_rate=context.params["learning_rate"], max_depth=int(context.params["max_depth"]),
                 max_iter=25, warm_start=True, random_state=context.seed)
    for iteration in range(1, MAX_ITERATIONS + 1):
        model.max_iter = 25 * iteration  # warm start: 25 more rounds on top of the ones before
        model.fit(context.x_train, context.y_train)
        context.report(iteration, model)  # scored on the validation rows; a tuning job may stop the trial here
    return model


def predict(model, x):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)  # [N, K]: Kiln takes the positive class's column for a binary task
    return model.predict(x)
