#pragma once
// The option table (option_table.cpp): the one list of options that feeds the command line,
// the environment, the config file, --help and describe(). Internal to sp_config.

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/toml_values.hpp"

namespace sp::config::detail {

// --help shows kHiddenGroup options nowhere. (CLI11 hides an option by an empty group, which
// also empties its name in error messages, so the group is emptied only while the help text
// is made.)
inline const char* const kHiddenGroup = "Hidden";

// The CLI11 app plus what the table says about each option beyond CLI11: how describe()
// prints its effective value, and whether it is a secret.
class Table : public CLI::App {
public:
    using CLI::App::App;

    // describe() prints `reader()` (a TOML value) as this option's effective value.
    CLI::Option* shows(CLI::Option* o, std::function<std::string()> reader) {
        readers_[o] = std::move(reader);
        return o;
    }
    // describe() never prints this option's value, only whether it is set.
    CLI::Option* secret(CLI::Option* o) {
        secrets_.insert(o);
        return o;
    }
    CLI::Option* hidden(CLI::Option* o) { return o->group(kHiddenGroup); }

    bool isSecret(const CLI::Option* o) const { return secrets_.count(o) > 0; }

    // The option's effective value as TOML. An option added without addOption/addFlag
    // falls back to CLI11's string of the bound variable, quoted.
    std::string value(CLI::Option* o) const {
        if (auto it = readers_.find(o); it != readers_.end()) {
            return it->second();
        }
        o->capture_default_str();
        return tomlString(o->get_default_str());
    }

    std::string helpText(bool all) {
        std::vector<CLI::Option*> hidden_now;
        for (CLI::Option* o : get_options()) {
            if (o->get_group() == kHiddenGroup) {
                o->group("");
                hidden_now.push_back(o);
            }
        }
        std::string text = all ? help("", CLI::AppFormatMode::All) : help();
        for (CLI::Option* o : hidden_now) {
            o->group(kHiddenGroup);
        }
        return text;
    }

private:
    std::map<const CLI::Option*, std::function<std::string()>> readers_;
    std::set<const CLI::Option*> secrets_;
};

// The config file key describe() prints: the first long name with '_' for '-'.
inline std::string keyOf(const CLI::Option* o) {
    const auto& l = o->get_lnames();
    std::string k = l.empty() ? o->get_name() : l.front();
    std::replace(k.begin(), k.end(), '-', '_');
    return k;
}

// Values the table binds to before parse() turns them into Config members. An option bound
// here needs app.shows(...) so that describe() prints the effective Config value.
struct Raw {
    std::vector<std::string> sip_listen;
    std::string api_listen = "127.0.0.1:8082";
    bool p2p_flag = false;
    bool no_p2p = false;
    std::string tls_listen = "0.0.0.0:5061";
    bool no_tls = false;
    std::string max_age = "7d";
    std::string tcp_idle_timeout = "30s";
    std::string block_time = "0";
    std::string p2p_epoch = "1h";
    std::string p2p_bucket = "10m";
    std::string p2p_flush = "120s";
};

// Adds every option to `app`, bound to `c` (or to `raw` where parse() converts the value).
void buildOptions(Table& app, Config& c, Raw& raw);

} // namespace sp::config::detail
