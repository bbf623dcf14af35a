# Helpers shared by every folder: warnings, sanitizers, one library per folder, one
# unit-test binary per library.

set(SP_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
    -Wnon-virtual-dtor -Woverloaded-virtual -Wimplicit-fallthrough)
if(SP_WERROR)
    list(APPEND SP_WARNINGS -Werror)
endif()

# Boost 1.74's asio/awaitable.hpp misses <utility> under C++20.
add_compile_options(-include utility)

if(SP_SANITIZE AND SP_TSAN)
    message(FATAL_ERROR "SP_SANITIZE (ASan) and SP_TSAN cannot be combined: use two builds")
endif()
if(SP_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
        -fno-sanitize-recover=undefined)
    add_link_options(-fsanitize=address,undefined)
endif()
# ThreadSanitizer (preset tsan): unit tests only. Third-party libraries (libosip2, sqlite,
# OpenDHT, curl) are not instrumented, so races inside them are not seen.
if(SP_TSAN)
    add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
    add_link_options(-fsanitize=thread)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        # GCC warns that TSan does not model atomic_thread_fence (asio's fenced blocks use
        # them); asio also synchronises with mutexes, which TSan sees.
        add_compile_options(-Wno-tsan)
    endif()
endif()
# Under AddressSanitizer (and in fuzz builds) libosip2 allocates with malloc, not from the
# parser's arena, so that every osip allocation is checked (src/sip/parse.cpp).
if(SP_SANITIZE OR SP_FUZZ)
    add_compile_definitions(SP_NO_OSIP_ARENA)
endif()

# sp_library(NAME SOURCES ... DEPS ...): a static library sp_<NAME> built from a folder.
function(sp_library name)
    cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
    add_library(sp_${name} STATIC ${A_SOURCES})
    target_include_directories(sp_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src
        ${PROJECT_BINARY_DIR}/generated)
    target_compile_options(sp_${name} PRIVATE ${SP_WARNINGS})
    target_link_libraries(sp_${name} PUBLIC ${A_DEPS})
endfunction()

# sp_test(NAME SOURCES ... DEPS ...): a GoogleTest binary registered with ctest.
function(sp_test name)
    if(NOT SP_BUILD_TESTS)
        return()
    endif()
    cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
    add_executable(${name} ${A_SOURCES})
    target_compile_options(${name} PRIVATE ${SP_WARNINGS})
    target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
    include(GoogleTest)
    gtest_discover_tests(${name} TEST_PREFIX "${name}." DISCOVERY_TIMEOUT 60
        PROPERTIES LABELS unit)
endfunction()

# sp_fuzzer(NAME SOURCE ... DEPS ... CORPUS dir): with SP_FUZZ, a libFuzzer binary; in
# every build, a replay binary that runs each corpus file through the same entry point,
# registered with ctest.
function(sp_fuzzer name)
    cmake_parse_arguments(A "" "CORPUS" "SOURCES;DEPS" ${ARGN})
    if(SP_FUZZ)
        add_executable(${name} ${A_SOURCES})
        target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
        target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
        target_link_libraries(${name} PRIVATE ${A_DEPS})
    endif()
    if(SP_BUILD_TESTS)
        add_executable(${name}_replay ${A_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.cpp)
        target_link_libraries(${name}_replay PRIVATE ${A_DEPS})
        add_test(NAME ${name}_corpus COMMAND ${name}_replay ${A_CORPUS})
        set_tests_properties(${name}_corpus PROPERTIES LABELS fuzz)
    endif()
endfunction()
