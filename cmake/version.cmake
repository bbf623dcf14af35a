# Writes generated/core/version.hpp at build time (cmake -P), so the git revision is the one
# being built, not the one at configure time. configure_file leaves an unchanged file alone,
# so an unchanged revision rebuilds nothing.
# In: SRC (version.hpp.in), DST, SOURCE_DIR, PROJECT_VERSION.
execute_process(COMMAND git rev-parse --short=12 HEAD
    WORKING_DIRECTORY ${SOURCE_DIR}
    OUTPUT_VARIABLE SP_GIT_REVISION OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT SP_GIT_REVISION)
    set(SP_GIT_REVISION "unknown")
endif()
configure_file(${SRC} ${DST} @ONLY)
