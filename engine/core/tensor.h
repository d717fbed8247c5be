// Tensor: an owning, contiguous, row-major float32 array with a shape. The CPU reference engine
// computes in float32; checkpoints of any dtype are converted to it when loaded.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace expertmesh {

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor of the given shape.
  explicit Tensor(std::vector<int64_t> shape);
  // Takes ownership of `values`; values.size() must equal the product of `shape`.
  Tensor(std::vector<int64_t> shape, std::vector<float> values);

  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const { return shape_[axis < 0 ? axis + rank() : axis]; }
  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  bool empty() const { return values_.empty(); }

  float* data() { return values_.data(); }
  const float* data() const { return values_.data(); }
  std::span<float> values() { return values_; }
  std::span<const float> values() const { return values_; }
  // Row `row` of a rank-2 tensor.
  std::span<const float> row(int64_t row) const;

  // Same storage, new shape with the same element count.
  void Reshape(std::vector<int64_t> shape);
  // "[2, 3, 4]"
  std::string ShapeString() const;

 private:
  std::vector<int64_t> shape_;
  std::vector<float> values_;
};

int64_t ShapeElementCount(const std::vector<int64_t>& shape);
std::string FormatShape(const std::vector<int64_t>& shape);

}  // namespace expertmesh
