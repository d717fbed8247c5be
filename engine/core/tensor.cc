// Tensor storage and shape helpers.
#include "engine/core/tensor.h"

#include <cassert>
#include <sstream>
#include <utility>

namespace expertmesh {

int64_t ShapeElementCount(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t extent : shape) count *= extent;
  return count;
}

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

Tensor::Tensor(std::vector<int64_t> shape)
    : shape_(std::move(shape)), values_(static_cast<size_t>(ShapeElementCount(shape_)), 0.0f) {}

Tensor::Tensor(std::vector<int64_t> shape, std::vector<float> values)
    : shape_(std::move(shape)), values_(std::move(values)) {
  assert(static_cast<int64_t>(values_.size()) == ShapeElementCount(shape_));
}

std::span<const float> Tensor::row(int64_t row) const {
  const int64_t width = shape_.back();
  return std::span<const float>(values_.data() + row * width, static_cast<size_t>(width));
}

void Tensor::Reshape(std::vector<int64_t> shape) {
  assert(ShapeElementCount(shape) == size());
  shape_ = std::move(shape);
}

std::string Tensor::ShapeString() const { return FormatShape(shape_); }

}  // namespace expertmesh
