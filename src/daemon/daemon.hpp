#pragma once
// The composition root: builds every module from the Config, owns the threads, handles
// signals and shutdown. Nothing else sees all modules.

#include "config/config.hpp"

namespace sp::daemon {

// Runs until SIGINT or SIGTERM and returns the process exit code: 0 after a clean
// shutdown (every accepted event committed), 1 when startup fails (one line on stderr
// naming the problem, before anything is half started). Call from the main thread.
int run(const config::Config& config);

// Reads the node id from <data_dir>/node-id, or creates it (a new v4 UUID). Throws
// std::runtime_error naming the file.
std::string loadOrCreateNodeId(const std::string& data_dir);

} // namespace sp::daemon
