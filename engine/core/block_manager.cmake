# engine/core block manager: BlockPool, block hashing, KvCacheManager and the
# KV event log (the bookkeeping half of paged attention; no tensors). Included from
# engine/core/CMakeLists.txt.
add_library(tandem_block_manager STATIC
  ${CMAKE_CURRENT_LIST_DIR}/block_hash.cc
  ${CMAKE_CURRENT_LIST_DIR}/block_pool.cc
  ${CMAKE_CURRENT_LIST_DIR}/kv_cache_manager.cc
  ${CMAKE_CURRENT_LIST_DIR}/kv_event_log.cc)
# XXH64 for the block hashes comes from libxxhash (libxxhash-dev).
find_package(PkgConfig REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
target_link_libraries(tandem_block_manager
  PUBLIC tandem_common absl::flat_hash_map absl::flat_hash_set absl::status absl::statusor
  PRIVATE absl::strings absl::raw_logging_internal absl::inlined_vector PkgConfig::XXHASH)
