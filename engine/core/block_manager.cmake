# engine/core block manager: BlockPool, block hashing and KvCacheManager (the
# bookkeeping half of paged attention; no tensors). Included from
# engine/core/CMakeLists.txt.
add_library(tandem_block_manager STATIC
  ${CMAKE_CURRENT_LIST_DIR}/block_hash.cc
  ${CMAKE_CURRENT_LIST_DIR}/block_pool.cc
  ${CMAKE_CURRENT_LIST_DIR}/kv_cache_manager.cc)
target_link_libraries(tandem_block_manager
  PUBLIC tandem_common absl::flat_hash_map absl::status absl::statusor
  PRIVATE absl::strings absl::raw_logging_internal)
