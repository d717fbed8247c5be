// Tensor shape bookkeeping.
#include "engine/core/tensor.h"

#include <gtest/gtest.h>

namespace expertmesh {
namespace {

TEST(TensorTest, ShapeAndRows) {
  Tensor tensor({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(tensor.size(), 6);
  EXPECT_EQ(tensor.dim(-1), 3);
  EXPECT_EQ(tensor.row(1)[0], 4.0f);
  EXPECT_EQ(tensor.ShapeString(), "[2, 3]");
  tensor.Reshape({3, 2});
  EXPECT_EQ(tensor.row(1)[0], 3.0f);
  EXPECT_EQ(Tensor({4, 5}).size(), 20);
}

}  // namespace
}  // namespace expertmesh
