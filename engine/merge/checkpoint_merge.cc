// MergeCheckpoint: parents -> TensorMerger -> ShardedSafetensorsWriter, plus config, tokenizer
// files and the report, written into a temporary directory renamed into place on success.
#include "engine/merge/checkpoint_merge.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/merge/safetensors_writer.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

absl::Status WriteTextFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path.string(), " failed"));
  return absl::OkStatus();
}

// The base parent's config.json; quantization_config is dropped when no FP8 tensor remains.
absl::Status WriteConfig(const std::filesystem::path& base_dir, const std::filesystem::path& out_dir, bool has_fp8) {
  const std::filesystem::path source = base_dir / "config.json";
  std::ifstream in(source, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", source.string()));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(text.str(), nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source.string(), " is not a JSON object"));
  }
  if (!has_fp8) config.erase("quantization_config");
  return WriteTextFile(out_dir / "config.json", config.dump(2) + "\n");
}

absl::Status CopyCompanionFiles(const std::filesystem::path& base_dir, const std::filesystem::path& out_dir) {
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    const std::filesystem::path source = base_dir / file;
    if (!std::filesystem::exists(source)) continue;
    std::error_code error;
    std::filesystem::copy_file(source, out_dir / file, std::filesystem::copy_options::overwrite_existing, error);
    if (error) return absl::InternalError(absl::StrCat("copying ", source.string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<MergeReport> MergeInto(const Recipe& recipe, const std::filesystem::path& work_dir,
                                      const CheckpointMergeOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  EXPERTMESH_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Checkpoint>> parents, OpenParents(recipe));
  std::vector<const Checkpoint*> borrowed;
  for (const auto& parent : parents) borrowed.push_back(parent.get());
  EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<TensorMerger> merger, TensorMerger::Create(recipe, borrowed));

  std::vector<TensorSpec> specs;
  bool has_fp8 = false;
  for (const OutputTensorSpec& output : merger->outputs()) {
    specs.push_back({output.name, output.dtype, output.shape});
    has_fp8 |= output.dtype == DType::kF8E4M3;
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<ShardedSafetensorsWriter> writer,
                              ShardedSafetensorsWriter::Create(work_dir, specs, options.max_shard_bytes));

  MergeReport report;
  report.recipe = recipe;
  MergeProgress progress;
  progress.tensors_total = static_cast<int64_t>(specs.size());
  progress.bytes_total = writer->total_tensor_bytes();
  if (options.progress) options.progress(progress);
  for (const OutputTensorSpec& output : merger->outputs()) {
    EXPERTMESH_ASSIGN_OR_RETURN(MergedTensor tensor, merger->Merge(output.name, options.stop));
    EXPERTMESH_RETURN_IF_ERROR(writer->Write(tensor.name, tensor.bytes));
    report.Add(tensor);
    ++progress.tensors_done;
    progress.bytes_done += tensor.bytes.size();
    progress.merged = report.merged;
    progress.kept_by_delta = report.kept_by_delta;
    progress.copied = report.copied;
    progress.current = tensor.name;
    if (options.progress) options.progress(progress);
  }
  EXPERTMESH_RETURN_IF_ERROR(writer->Finish());
  report.shard_files = writer->shard_file_names();

  const std::filesystem::path base_dir = recipe.parents[recipe.BaseIndex()].checkpoint;
  EXPERTMESH_RETURN_IF_ERROR(WriteConfig(base_dir, work_dir, has_fp8));
  EXPERTMESH_RETURN_IF_ERROR(CopyCompanionFiles(base_dir, work_dir));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPERTMESH_RETURN_IF_ERROR(WriteTextFile(work_dir / "merge_report.json", report.ToJson() + "\n"));
  return report;
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Checkpoint>>> OpenParents(
    const Recipe& recipe, std::function<bool(const std::string&)> name_filter) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateRecipe(recipe));
  std::vector<std::unique_ptr<Checkpoint>> parents;
  for (const RecipeParent& parent : recipe.parents) {
    absl::StatusOr<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(parent.checkpoint, name_filter);
    if (!opened.ok()) {
      return absl::Status(opened.status().code(), absl::StrCat("parent '", parent.name, "' (", parent.checkpoint.string(),
                                                               "): ", opened.status().message()));
    }
    parents.push_back(std::move(opened).value());
  }
  return parents;
}

absl::StatusOr<MergeReport> MergeCheckpoint(const Recipe& recipe, const std::filesystem::path& out_dir,
                                            const CheckpointMergeOptions& options) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateRecipe(recipe));
  std::error_code error;
  if (std::filesystem::exists(out_dir) &&
      (!std::filesystem::is_directory(out_dir) || !std::filesystem::is_empty(out_dir))) {
    return absl::AlreadyExistsError(absl::StrCat(out_dir.string(), " exists and is not an empty directory"));
  }
  std::filesystem::path target = out_dir;
  if (!target.has_filename()) target = target.parent_path();  // "out/" -> "out"
  const std::filesystem::path work_dir = target.string() + ".partial";
  std::filesystem::remove_all(work_dir, error);
  std::filesystem::create_directories(work_dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", work_dir.string(), ": ", error.message()));

  absl::StatusOr<MergeReport> report = MergeInto(recipe, work_dir, options);
  if (report.ok()) {
    std::filesystem::remove(target, error);  // an empty directory, if any
    error.clear();
    std::filesystem::rename(work_dir, target, error);
    if (error) {
      report = absl::InternalError(absl::StrCat("renaming ", work_dir.string(), " to ", target.string(), ": ",
                                                error.message()));
    }
  }
  if (!report.ok()) std::filesystem::remove_all(work_dir, error);
  return report;
}

}  // namespace expertmesh
