// dlcli package --target mcu: the README example for TFLite Micro (a string.Template: arg, fill, read).
#include <cmath>
#include <cstdint>

#include "model_data.h"
#include "ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {
alignas(16) uint8_t tensor_arena[kTensorArenaSize];
ModelOpResolver resolver;
tflite::MicroInterpreter* interpreter = nullptr;
}  // namespace

// Call once at start-up.
bool SetupModel() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) return false;
  if (RegisterOps(resolver) != kTfLiteOk) return false;
  static tflite::MicroInterpreter static_interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  interpreter = &static_interpreter;
  return interpreter->AllocateTensors() == kTfLiteOk;
}

// One example (kInputSize values, normalised as in preprocessing.json) -> kOutputSize scores.
bool RunModel(${arg}, float* scores) {
  TfLiteTensor* input = interpreter->input(0);
${fill}
  if (interpreter->Invoke() != kTfLiteOk) return false;
  const TfLiteTensor* output = interpreter->output(0);
${read}
  return true;
}
