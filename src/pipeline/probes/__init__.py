"""Layer-wise probes for latent generalization: one registry, scikit-learn-style estimators.

Every probe is a scikit-learn classifier (``ClassifierMixin`` + ``BaseEstimator``): ``__init__``
only stores its keyword parameters; ``fit(X, y)`` returns ``self``; ``predict``, ``score``
(accuracy) and, where meaningful, ``decision_function`` follow; fitted attributes end in ``_``
and include ``classes_`` and ``n_features_in_``. ``X`` is a 2-D float array ``(n, d)`` of layer
activations (float16 is upcast to float32; float32 and float64 are kept), ``y`` integer labels.

Probes (registry name -> class, module)
---------------------------------------
``masc``   -> :class:`MASC` (:mod:`.masc`): Minimum Angle Subspace Classifier; per class the
    origin-centred subspace of the top eigenvectors of the uncentred second moment ``X_c^T X_c``
    reaching ``variance`` energy (or ``variance`` components); smallest angle wins.
``velpic`` -> :class:`VeLPIC` (:mod:`.velpic`): per class the top eigenvector of the same second
    moment, signed by the class mean (papers) or the global mean (authors' code); a linear
    classifier ``argmax_c v_c^T x``.
``linear`` -> :class:`LinearProbe` (:mod:`.linear`): the authors' logistic-regression baseline
    (torch, Adam, no standardisation, fixed epochs; bitwise deterministic on CPU).
``logreg`` -> :class:`LogisticProbe` (:mod:`.linear`): logistic regression on standardised
    features, L-BFGS to a tolerance (scikit-learn), records ``converged_``.
``ncm``    -> :class:`NearestClassMean` (:mod:`.ncm`): cosine similarity to the class means.
``knn``, ``lda`` -> :class:`KNNProbe`, :class:`LDAProbe` (:mod:`.sklearn_probes`): thin wrappers
    around scikit-learn's ``KNeighborsClassifier`` and ``LinearDiscriminantAnalysis``.

Package layout
--------------
:mod:`.registry`   :data:`PROBES`, :func:`make_probe` (unknown names, parameters or values raise
                   ``ValueError`` at construction), :func:`setting_id`, :func:`format_value`,
                   :func:`probe_to_arrays` / :func:`probe_from_arrays` / :func:`probe_template_keys`
                   (every fitted probe round-trips through plain numpy arrays, e.g. HDF5).
:mod:`.moments`    the statistics route: :class:`ClassMoments` (per-class count, sum, uncentred
                   second moment), :func:`fit_from_moments` (dispatches to the ``fit_moments``
                   method of MASC, VeLPIC and NCM, the :data:`FROM_MOMENTS`),
                   :func:`reduce_activations`, sizes (:func:`moment_bytes`, :func:`pays_off`,
                   :func:`moment_layer_choice`).
:mod:`.spectral`   :func:`fit_spectral`: the fit of MASC and VeLPIC (both routes), one float64
                   eigendecomposition per class shared by every MASC / VeLPIC setting fitted
                   on the same data (the ``fit`` stage fits them together).
:mod:`.stage`      the workflow's ``fit`` and ``score`` stages: :func:`fit_subspaces`,
                   :func:`score_probes`, :func:`load_fitted`.
:mod:`.accel`      the torch route: MASC, VeLPIC, NCM and LinearProbe take ``device`` (None = the
                   numpy reference route; ``"cpu"`` / ``"cuda[:i]"`` = torch there, same float64
                   eigenproblems, same fitted arrays); :func:`~.accel.probe_device` maps the
                   config's ``probes.device`` (``"auto"`` = CUDA if visible, else numpy).
:mod:`.agreement`  :func:`prediction_agreement` / :func:`assert_agree`: whether two score arrays
                   predict alike up to near-ties (the reliability promise across routes).
``_common``        the package's internal helpers (input checks, float64 eigen-helpers, row
                   chunking, the ``_Probe`` base class); nothing outside the package imports it.

torch is imported lazily (when :class:`LinearProbe` fits or a probe runs on a ``device``), as are
h5py, pandas and the activation reader (when a stage runs): ``import pipeline.probes`` is cheap.
"""

from pipeline.probes.agreement import Agreement, assert_agree, prediction_agreement
from pipeline.probes.linear import LinearProbe, LogisticProbe
from pipeline.probes.masc import MASC
from pipeline.probes.moments import (
    FROM_MOMENTS,
    REDUCED_MODES,
    ClassMoments,
    fit_from_moments,
    moment_bytes,
    moment_layer_choice,
    pays_off,
    reduce_activations,
)
from pipeline.probes.ncm import NearestClassMean
from pipeline.probes.registry import (
    PROBES,
    format_value,
    make_probe,
    probe_class,
    probe_from_arrays,
    probe_template_keys,
    probe_to_arrays,
    setting_id,
)
from pipeline.probes.sklearn_probes import KNN_METRICS, LDA_SOLVERS, KNNProbe, LDAProbe
from pipeline.probes.spectral import SPECTRAL_PROBES, fit_spectral
from pipeline.probes.stage import fit_subspaces, load_fitted, open_subspaces, probe_layers, score_probes
from pipeline.probes.velpic import SIGN_CONVENTIONS, VeLPIC

__all__ = [
    # estimators
    "MASC", "VeLPIC", "LinearProbe", "LogisticProbe", "NearestClassMean", "KNNProbe", "LDAProbe",
    "SIGN_CONVENTIONS", "KNN_METRICS", "LDA_SOLVERS",
    # registry
    "PROBES", "make_probe", "probe_class", "setting_id", "format_value", "probe_to_arrays",
    "probe_from_arrays", "probe_template_keys",
    # statistics route
    "ClassMoments", "FROM_MOMENTS", "REDUCED_MODES", "fit_from_moments", "moment_bytes", "pays_off",
    "moment_layer_choice", "reduce_activations",
    # one eigendecomposition per class for every MASC / VeLPIC setting
    "SPECTRAL_PROBES", "fit_spectral",
    # stages
    "probe_layers", "fit_subspaces", "score_probes", "load_fitted", "open_subspaces",
    # predictions of two routes agree up to near-ties
    "Agreement", "prediction_agreement", "assert_agree",
]
