"""The numbers the whole kit shares: model input, normalisation, paths, training recipe, addresses, serving defaults.

Packed into the .mar beside the handler, so it imports nothing but the standard library.
"""

IMAGE_SIZE = 28
NUM_CLASSES = 10
# MNIST digits were scaled to fit 20×20 and centred by centre of mass in 28×28; served images are too.
DIGIT_BOX = 20
# Mean and standard deviation of the MNIST training pixels (scaled to 0..1): training, the handler
# and the client all normalise with these, so what is served is what was trained.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

MODEL_NAME = "mnist"
MODEL_VERSION = "1.0"
# Default paths, relative to the kit's home: $MNIST_KIT_HOME, else the checkout (mnist_kit.paths.home).
HOME_ENV = "MNIST_KIT_HOME"
CHECKPOINT = "checkpoints/mnist_sd.pt"
MODEL_STORE = "model_store"
DATA_DIR = "data/mnist"
DATA_DIR_ENV = "MNIST_DATA_DIR"
TS_CONFIG = "config.properties"
LOGS = "logs"
REPORTS = "reports"

# The default training recipe (mnist-kit train, python train.py, training.fit).
EPOCHS = 7
# Fine-tuning on corrections (`train --feedback`): from the current weights, FINETUNE_EPOCHS over MNIST at
# FINETUNE_LR, with EXTRA_BATCH corrections drawn into each batch; FEEDBACK_HOLDOUT of them kept out, to measure.
# 4, not 16: on three kinds of users' pictures, 16 cost one MNIST digit 0.69 to 1.07 points (past the per-digit
# guard's margin, so `canary run` refused honest fine-tunes) and 4 cost 0.30 to 0.41, reading the users' kind as
# well or better on two kinds of three; and 3 000 corrections calling 7s 1s took MNIST's 7s to 14 % at 16, nowhere
# at 4 (docs/finetune/*.json, scripts/finetune_mix.py).
FINETUNE_EPOCHS = 2
FINETUNE_LR = 1e-3
EXTRA_BATCH = 4
FEEDBACK_HOLDOUT = 0.2
# `mnist-kit ab`: the significance level of McNemar's test.
AB_ALPHA = 0.01
TRAIN_BATCH_SIZE = 128
LEARNING_RATE = 3e-3
SEED = 1
# Outlier exposure: OUTLIER_IMAGES synthetic non-digits (training/outliers.py), OUTLIER_BATCH of them beside each
# training batch, their cross-entropy to the uniform answer weighted OUTLIER_WEIGHT; PRINTED_DIGITS printed digits join
# MNIST's 60 000 (in proportion with --limit), and MARKED_SHARE of the digits get stray marks near the edges (MARKS of
# them).
OUTLIER_IMAGES = 8000
OUTLIER_BATCH = 32
HANDWRITING_BATCH = 16  # letters of the handwriting glyph bank (training/handwriting.py) beside them
OUTLIER_WEIGHT = 0.5
PRINTED_DIGITS = 3000
MARKS = 2000
MARKED_SHARE = 0.15

HOST = "127.0.0.1"
INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082
GRPC_PORTS = (7070, 7071)
INFERENCE_URL = f"http://{HOST}:{INFERENCE_PORT}"
# The kserve runtime (KServe's ModelServer): REST on INFERENCE_PORT as TorchServe's inference API, gRPC v2 on
# KSERVE_GRPC_PORT; a stop drains requests already received for at most KSERVE_GRACE_S seconds.
RUNTIMES = ("torchserve", "kserve")
KSERVE_GRPC_PORT = 8081
KSERVE_GRACE_S = 30
# A kserve worker that dies while the runtime is not stopping is started again (serving/kserve/supervision.py), at
# once: one killed while serving (by the OOM killer, say) is wanted back now. A worker loads in a few seconds, so one
# that dies within KSERVE_RESTART_STABLE_S of its start is failing rather than unlucky: from its second such death
# in a row the restart waits KSERVE_RESTART_BACKOFF_S, doubling each time, and at the KSERVE_RESTART_LIMIT-th it is
# left dead (its start and 4 restarts, 0 + 1 + 2 + 4 s apart), so that workers that cannot load their archive end
# the runtime in about 20 s rather than never. The supervisor looks at its workers every KSERVE_SUPERVISE_POLL_S: a
# restart or a stop signal handed on that late is nothing next to a worker's load or drain. A spare worker, loaded and
# waiting, takes a dead one's place at once; the next spare starts KSERVE_SPARE_AFTER_S later, so that its load (a
# core's second or two) does not slow the workers while they take the dead one's share back.
KSERVE_RESTART_BACKOFF_S = 1.0
KSERVE_RESTART_STABLE_S = 60
KSERVE_RESTART_LIMIT = 5
KSERVE_SUPERVISE_POLL_S = 0.1
KSERVE_SPARE_AFTER_S = 5.0
# A replica told to stop keeps serving DRAIN_S seconds (its readiness failing) before it stops: Kubernetes takes a
# terminating pod out of its EndpointSlices at once, but kube-proxy on each node and an ingress apply that a few
# seconds later (kube-proxy syncs at most once a second, ingress controllers reload), and a proxy health-checking
# every second takes 2 failures to drop it; 10 s covers both with room. The pod's grace period then leaves the
# kserve runtime's own grace for what is still in flight: 10 + 30 + 5 s to exit.
DRAIN_ENV = "MNIST_KIT_DRAIN_SECONDS"
# `export kserve --canary VERSION`: the share of requests the new revision takes until promoted or rolled back.
CANARY_PERCENT = 10
DRAIN_S = 10
TERMINATION_GRACE_S = DRAIN_S + KSERVE_GRACE_S + 5
# The TorchServe image's readiness (its entrypoint's: TorchServe's /ping cannot say that a replica is going away).
HEALTH_PORT = 8083
MANAGEMENT_URL = f"http://{HOST}:{MANAGEMENT_PORT}"
KEY_FILE = "key_file.json"
# The pads' corrections (mnist_kit/feedback/store.py), in the kit's home.
FEEDBACK_DB = "feedback.db"
# The inference token: what the clients send, and what the kserve runtime's production profile checks when set.
TOKEN_ENV = "MNIST_KIT_TOKEN"
# Seconds a starting server's management API may refuse the key (while it writes a new key file) before waiting for
# it is given up as a token problem.
TOKEN_GRACE_S = 5

# The image formats the kit reads, by Pillow's name: the content type the client sends each with, and the first bytes
# that tell it (WebP's are "RIFF", 4 bytes of size, then "WEBP"; MPO is a multi-picture JPEG, told apart by Pillow).
IMAGE_FORMATS = {
    "PNG": ("image/png", (b"\x89PNG",)),
    "JPEG": ("image/jpeg", (b"\xff\xd8",)),
    "MPO": ("image/jpeg", ()),
    "GIF": ("image/gif", (b"GIF8",)),
    "BMP": ("image/bmp", (b"BM",)),
    "TIFF": ("image/tiff", (b"II*\x00", b"MM\x00*")),
    "WEBP": ("image/webp", ()),
}

# Input limits: 25 megapixels (a 6000×4000 photo), checked from the image header before decoding,
# and a request body of at most 8 MiB (TorchServe's max_request_size).
MAX_IMAGE_PIXELS = 25_000_000
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# TorchServe's own max_request_size, for a config.properties that sets none.
TS_MAX_REQUEST_BYTES = 6_553_500

# Predictions below this confidence are counted in the LowConfidencePredictions metric. The handler's
# metrics are summed and reported this often (seconds), not per batch.
LOW_CONFIDENCE = 0.9
# What an answer's "flags" may hold (mnist_kit.worker.answers), and the top probability under which a picture is
# taken for no digit at all. With STRICT_HEADER: true, a request whose picture is no digit gets a 422 instead.
FLAGS = ("several_digits", "not_a_digit", "low_confidence")
NOT_A_DIGIT_BELOW = 0.15
STRICT_HEADER = "X-Strict"
METRICS_INTERVAL_S = 1.0
# Integrated Gradients steps for /explanations.
EXPLAIN_STEPS = 32

# Serving forms (mnist_kit.worker.serving_forms): the archive lists them in FORMS_FILE, each checked on the MNIST
# test set after int8 calibration on CALIBRATION_IMAGES training images, with CHECK_IMAGES labelled test images in
# CHECK_FILE for the workers to check quantised forms on their own CPU; the worker times them for at most
# FORM_TIMING_BUDGET_S at start. SERVING_FORM_ENV (or the archive's serving_form) forces one of SERVING_FORMS.
# ONNX forms take ONNX_INPUT and give ONNX_OUTPUT.
FORMS_FILE = "forms.json"
CALIBRATION_IMAGES = 2000
CHECK_FILE = "check.npz"
CHECK_IMAGES = 2000
# A form is packed (and a quantised one served) only if it loses at most this many points of the float model's
# test accuracy.
MAX_ACCURACY_DROP = 0.05
FORM_TIMING_BUDGET_S = 0.3
SERVING_FORM_ENV = "MNIST_KIT_SERVING_FORM"
SERVING_FORMS = ("onnx-int8", "onnx-fp32", "eager-fp32", "eager-fp32-aten")
ONNX_INPUT = "images"
ONNX_OUTPUT = "log_probabilities"

# Serving defaults written into the archive's model-config.yaml (why: archive.model_config).
BATCH_SIZE = 16
MAX_BATCH_DELAY_MS = 1
RESPONSE_TIMEOUT_S = 30

# KServe v1 and Open Inference Protocol v2 (mnist_kit.worker.protocols): the most images one request may carry
# (a batch of them is one forward pass in one worker), and the v2 outputs of inference and of explain.
MAX_IMAGES_PER_REQUEST = 1000
V2_OUTPUTS = ("predict", "probabilities", "flags")
V2_EXPLAIN_OUTPUTS = ("predict", "attributions", "pixels")

# Deploying beyond one machine (mnist_kit.deploy.export). KServe's TorchServe runtime mounts the model storage at
# /mnt/models and starts `torchserve --start --model-store=/mnt/models/model-store
# --ts-config=/mnt/models/config/config.properties`, as user 1000; the kit's image and manifests do the same.
MODEL_MOUNT = "/mnt/models"
DEPLOY_MODEL_STORE = f"{MODEL_MOUNT}/model-store"
DEPLOY_CONFIG = f"{MODEL_MOUNT}/config/config.properties"
SERVING_USER = 1000
# Every interface inside a pod or container; the pod's own firewall is the Service, which names 8080 only.
POD_HOST = "0.0.0.0"
IMAGE_NAME = "mnist-kit-serving"
# `mnist-kit image build` tags each Dockerfile target localhost/IMAGE_REPOSITORY:TARGET too.
IMAGE_REPOSITORY = "mnist-kit"
# The only folder of exports .dockerignore lets into the image's build context (the checkout): the Dockerfile's
# `model` target copies its LAYOUT from there.
DEPLOY_DIR = "deploy"
BENCH_REPORT = f"{REPORTS}/bench.json"
# Pod resources when there is no bench report: those of KServe's TorchServe runtime.
DEFAULT_CPUS = 1
DEFAULT_MEMORY_MIB = 2048
# Memory request: the bench's measured peak RSS times this, rounded up to MEMORY_STEP_MIB.
MEMORY_HEADROOM = 1.5
MEMORY_STEP_MIB = 256
MIN_REPLICAS = 1
MAX_REPLICAS = 4
# KServe's autoscaling: in-flight requests per pod (Knative's concurrency metric); the default target is the
# bench's smallest concurrency reaching SCALE_THROUGHPUT_SHARE of its best throughput, else this.
SCALE_METRICS = ("concurrency", "rps", "cpu", "memory")
DEFAULT_SCALE_TARGET = 32
SCALE_THROUGHPUT_SHARE = 0.85
# Plain Kubernetes: the HorizontalPodAutoscaler's target CPU use, in percent of the request.
HPA_CPU_PERCENT = 70
# The newest Kubernetes whose schemas kubernetes-validate bundles (1.37.0): the manifests are checked against it.
KUBERNETES_VERSION = "1.37"

# The drawing pad (mnist-kit ui, mnist-kit pad): the page's local port, the square canvas (10× the model's input,
# so a finger or a mouse draws comfortably) and the brush, whose default gives strokes as thick for their digit
# as MNIST's; a prediction is asked for once the pen has rested this long, and on every pen-up.
UI_PORT = 8000
PAD_SIZE = 280
BRUSH_WIDTH = 20
BRUSH_WIDTHS = (4, 48)
PREDICT_DEBOUNCE_MS = 150

# The shadow's disagreements (mnist_kit/serving/kserve/disagreements.py): every picture the shadow version answers
# otherwise than the default, kept in the kit's home beside feedback.db, up to SHADOW_STORE_BYTES of images (the
# oldest go first); a server worker queues at most SHADOW_MAX_PENDING for its writer thread and drops the rest.
# Labels are 0-9, or SHADOW_NOT_A_DIGIT_LABEL for "not a digit". Writers of one file (workers, replicas on one
# machine's folder) wait up to SHADOW_BUSY_TIMEOUT_S for each other.
SHADOW_DB = "shadow.db"
SHADOW_STORE_BYTES = 256 * 1024 * 1024
SHADOW_MAX_PENDING = 1000
SHADOW_NOT_A_DIGIT_LABEL = 10
SHADOW_BUSY_TIMEOUT_S = 30

# `ab --promote`'s guard per digit: B's accuracy on the MNIST test images of each digit may be below A's by at most
# this many points. A digit has ~1 000 test images (892 to 1 135), so a point is ~10 of them. The int8 form of the
# tests' tiny model (seeds 1 to 3) reads a digit at most 0.50 points (5 images) apart from its fp32 form, so two
# honest versions, each served in int8, stay within a point per digit from that alone. A candidate that reads ~10
# images of one digit as another is refused, even when it gains as many elsewhere and its total barely moves.
PROMOTION_DIGIT_MARGIN = 1.0

# The kserve runtime's routing, changed live (serving/kserve/routing.py): the state every worker follows, a JSON
# file in the runtime's folder, which each worker looks at every ROUTING_POLL_S seconds (a stat) and applies when it
# changed, so that all of them agree within a fraction of a second.
ROUTING_FILE = "routing.json"
ROUTING_POLL_S = 0.2

# `mnist-kit canary run` (feedback/canary_stages.py): how long each stage lasts at least, how often it reads the
# runtime, when a waiting run gives up, and each gate's least evidence and margin.
CANARY_DWELL_S = 20  # each stage's least time, however fast its figures come: a burst of luck is not a stage passed
CANARY_POLL_S = 3  # between two reads of the runtime: its /metrics and shadow.db, a few milliseconds each
CANARY_MAX_MINUTES = 60  # then a stage still waiting rolls back: a canary is not left half-promoted over a quiet night
# Errors: the candidate's 5xx share over the requests of its role in this stage, against the default's since the
# runtime started, on at least CANARY_MIN_REQUESTS each: the kit's model answers no 5xx at all, so one point more is a
# candidate that fails where the default does not, not noise (one stray failure in 100 is allowed).
CANARY_MIN_REQUESTS = 100
CANARY_ERROR_MARGIN = 0.01
# p99: on at least CANARY_MIN_LATENCIES answers of each version (fewer, and the p99 is the slowest one); the runtime's
# histogram buckets are 2 to 2.5 times apart, so an interpolated p99 moves by up to a bucket from noise alone: a
# candidate above twice the default's is slower by more than that.
CANARY_MIN_LATENCIES = 100
CANARY_P99_FACTOR = 2.0
# Flags: each flag's share of the pictures a version read, on at least CANARY_MIN_PICTURES each. Honest retrains move
# low_confidence and not_a_digit by a point or two on the same traffic (FEEDBACK.md's A/B runs); five points is a
# model that reads the traffic differently, which the labels may be too few to show yet.
CANARY_MIN_PICTURES = 200
CANARY_FLAG_MARGIN = 0.05

# `mnist-kit export monitoring` (deploy/alerts.py): the evaluation (and scrape) interval, and the alerts' thresholds;
# their windows are multiples of the interval, each with why, in the module. docs/MONITORING.md says where each
# figure comes from, and that none is yet measured on a live service's traffic.
MONITORING_INTERVAL = "30s"
MONITORING_ALERTMANAGER = "127.0.0.1:9093"
MONITORING_ERROR_SHARE = 0.01  # 5xx of a version's requests: the model answers none at all (as CANARY_ERROR_MARGIN)
MONITORING_P99_S = 0.1  # a bucket bound of mnist_kit_request_seconds: 5 x the worst p99 the bench measured (c=64)
MONITORING_FLAG_SHARE = 0.25  # not_a_digit or several_digits: 6 x the worst false alarms on a digit kind (4 %)
MONITORING_DRIFT_PSI = 0.25  # a population stability index over 0.25 is the usual "the population has changed"
MONITORING_DISAGREEMENT_SHARE = 0.05  # a shadow's: honest retrains read within a point or two of each other
MONITORING_WRONG_CORRECTIONS = 10  # corrections saying a version answered wrong, in the hour's window
MONITORING_MIN_PICTURES = 20  # the least pictures in the flag alert's short window: fewer, and a share is noise
MONITORING_MIN_COUNT = 100  # the least requests, timed answers, comparisons or drift pictures behind a share or a p99

# Input drift (mnist_kit/worker/drift.py), on the kserve runtime's /metrics as mnist_kit_drift_psi. The archive
# carries DRIFT_BASELINE_FILE: the statistics of DRIFT_BASELINE_IMAGES MNIST training images as served, in DRIFT_BINS
# quantile bins (deciles, PSI's usual: no baseline bin is empty, so DRIFT_EPSILON stands in only for a live bin that
# is) or, for the confidence, which piles up near 1, at DRIFT_CONFIDENCE_CUTS. Each worker keeps a version's last
# DRIFT_WINDOW pictures: a PSI's noise on traffic like the baseline's is about (bins − 1) × (1/window + 1/baseline),
# 0.023 here, far under the 0.1 read as "no change" (MNIST's test digits: 0.032 at most, docs/drift/*.json), and a
# new kind of picture crosses 0.25 once about a fifth of the window is of it (a second or two under load, where 1000
# took twice as long); with fewer than DRIFT_MIN_PICTURES (noise up to 0.1) no score is published. Scores are set at
# most every DRIFT_INTERVAL_S, not per batch (half the tests' scrape interval: a shift shows at the next scrape),
# each time from the newest window's worth of the pictures since the last: the measuring costs a busy worker at most
# a window every DRIFT_INTERVAL_S. Faint ink is below DRIFT_FAINT_LEVEL, solid ink at DRIFT_INK_LEVEL.
DRIFT_BASELINE_FILE = "drift_baseline.json"
DRIFT_BASELINE_IMAGES = 2000
DRIFT_BINS = 10
DRIFT_CONFIDENCE_CUTS = (0.5, 0.7, 0.9, 0.95, 0.99, 0.999)
DRIFT_EPSILON = 1e-4
DRIFT_WINDOW = 500
DRIFT_MIN_PICTURES = 250
DRIFT_INTERVAL_S = 0.25
DRIFT_FAINT_LEVEL = 64
DRIFT_INK_LEVEL = 128
