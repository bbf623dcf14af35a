// sentrypeer: parse options, run the daemon; nothing else.
#include <cstdio>
#include <exception>
#include <variant>

#include "config/config.hpp"
#include "daemon/daemon.hpp"

int main(int argc, char** argv) {
    try {
        auto parsed = sp::config::parse(argc, argv);
        if (const auto* exit = std::get_if<sp::config::Exit>(&parsed)) {
            std::fprintf(exit->code == 0 ? stdout : stderr, "%s\n", exit->message.c_str());
            return exit->code;
        }
        const auto& config = std::get<sp::config::Config>(parsed);
        if (config.check_config) {
            std::fputs(sp::config::describe(config).c_str(), stdout);
            return 0;
        }
        return sp::daemon::run(config);
    } catch (const std::exception& e) {
        // Only a bug gets here: modules report their own failures.
        std::fprintf(stderr, "sentrypeer: fatal: %s\n", e.what());
        return 1;
    }
}
