// Integration tests of the stampede-token program. Each test starts the emulator
// in-process over TLS on loopback and runs the built binary as a subprocess with a
// controlled environment, its own HOME and XDG_CACHE_HOME, and output captured in files.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE stampede_token
#include <boost/test/unit_test.hpp>

#include <emulator.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace emulator = stampede::emulator;
namespace fs = std::filesystem;

namespace {

constexpr const char* tool_binary = STAMPEDE_TOKEN_BINARY;
constexpr std::string_view client_id = "ai.stampede.token-cli-test";
constexpr std::string_view client_secret = "cli-test-secret-Qm7xZ2";
constexpr std::string_view wrong_secret = "wrong-secret-Hc4pW9";

// Size of the cache file header: magic, version, salt and nonce.
constexpr std::size_t cache_header_size = 8 + 1 + 32 + 12;

struct run_result {
    int exit_status = -1;
    std::string out;
    std::string err;
};

std::ostream& operator<<(std::ostream& os, const run_result& r)
{
    return os << "exit " << r.exit_status << ", stderr: " << r.err;
}

std::string read_file(const fs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, std::string_view content, mode_t mode)
{
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(content.data(), static_cast<std::streamsize>(content.size()));
        BOOST_TEST_REQUIRE(out.good());
    }
    BOOST_TEST_REQUIRE(::chmod(path.c_str(), mode) == 0);
}

mode_t permission_bits(const fs::path& path)
{
    struct stat info {};
    BOOST_TEST_REQUIRE(::lstat(path.c_str(), &info) == 0);
    return info.st_mode & 07777;
}

// A directory under the system temporary directory, removed with its contents at the end.
class temp_directory {
public:
    temp_directory()
    {
        std::string pattern = (fs::temp_directory_path() / "stampede-token-test.XXXXXX").string();
        BOOST_TEST_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }

    temp_directory(const temp_directory&) = delete;
    temp_directory& operator=(const temp_directory&) = delete;

    ~temp_directory()
    {
        std::error_code ignored;
        fs::remove_all(path_, ignored);
    }

    const fs::path& path() const noexcept { return path_; }

private:
    fs::path path_;
};

// A running stampede-token process whose output goes to files.
class tool_process {
public:
    tool_process(const std::vector<std::string>& args, const std::vector<std::string>& env,
                 const fs::path& output_prefix)
        : out_path_(output_prefix.string() + ".out")
        , err_path_(output_prefix.string() + ".err")
    {
        std::vector<char*> argv{const_cast<char*>(tool_binary)};
        for (const std::string& arg : args) {
            argv.push_back(const_cast<char*>(arg.c_str()));
        }
        argv.push_back(nullptr);
        std::vector<char*> envp;
        for (const std::string& entry : env) {
            envp.push_back(const_cast<char*>(entry.c_str()));
        }
        envp.push_back(nullptr);

        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, out_path_.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int rc = ::posix_spawn(&pid_, tool_binary, &actions, nullptr, argv.data(),
                                     envp.data());
        posix_spawn_file_actions_destroy(&actions);
        BOOST_TEST_REQUIRE(rc == 0, "posix_spawn of " << tool_binary << " failed: " << rc);
    }

    tool_process(const tool_process&) = delete;
    tool_process& operator=(const tool_process&) = delete;

    ~tool_process()
    {
        if (pid_ > 0) {
            wait();
        }
    }

    run_result wait()
    {
        run_result result;
        int status = 0;
        pid_t waited = -1;
        do {
            waited = ::waitpid(pid_, &status, 0);
        } while (waited < 0 && errno == EINTR);
        pid_ = -1;
        if (waited > 0) {
            result.exit_status =
                WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        result.out = read_file(out_path_);
        result.err = read_file(err_path_);
        return result;
    }

private:
    fs::path out_path_;
    fs::path err_path_;
    pid_t pid_ = -1;
};

emulator::options emulator_options(const fs::path& cert_file, std::string_view secret,
                                   std::string listen = "127.0.0.1:0")
{
    emulator::options opts;
    opts.listen = std::move(listen);
    opts.clients = {{std::string(client_id), std::string(secret)}};
    opts.cert_out = cert_file.string();
    return opts;
}

// An emulator over TLS with one registered client, and a home directory for the tool.
class tool_fixture {
public:
    tool_fixture()
        : cert_file_(home_.path() / "emulator.pem")
        , server(emulator_options(cert_file_, client_secret))
    {
        server.start();
    }

    // HOME and XDG_CACHE_HOME in the temporary directory, plus the credentials.
    std::vector<std::string> environment(std::string_view secret = client_secret) const
    {
        return {"HOME=" + home_.path().string(), "XDG_CACHE_HOME=" + cache_home().string(),
                "STAMPEDE_CLIENT_ID=" + std::string(client_id),
                "STAMPEDE_CLIENT_SECRET=" + std::string(secret)};
    }

    std::vector<std::string> environment_without_credentials() const
    {
        return {"HOME=" + home_.path().string(), "XDG_CACHE_HOME=" + cache_home().string()};
    }

    // The token URL and CA file of the emulator, followed by `extra`.
    std::vector<std::string> arguments(std::vector<std::string> extra = {}) const
    {
        std::vector<std::string> args{"--token-url", server.token_url(), "--ca-file",
                                      cert_file_.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    }

    run_result run(std::vector<std::string> extra = {}) const
    {
        return run_with(arguments(std::move(extra)), environment());
    }

    run_result run_with(const std::vector<std::string>& args,
                        const std::vector<std::string>& env) const
    {
        return tool_process(args, env, next_output_prefix()).wait();
    }

    // Runs the tool once and returns the printed token without its newline.
    std::string fetch_token() const
    {
        const run_result result = run();
        BOOST_TEST_REQUIRE(result.exit_status == 0, result);
        BOOST_TEST_REQUIRE(result.out.size() > 1u);
        BOOST_TEST_REQUIRE(result.out.back() == '\n');
        return result.out.substr(0, result.out.size() - 1);
    }

    std::uint64_t token_requests() const { return server.get_stats().token_requests; }

    fs::path cache_home() const { return home_.path() / "cache"; }
    fs::path cache_directory() const { return cache_home() / "stampede"; }

    // Every entry of the cache directory, temporary files included.
    std::vector<fs::path> cache_entries() const
    {
        std::vector<fs::path> entries;
        std::error_code ec;
        for (const auto& entry : fs::directory_iterator(cache_directory(), ec)) {
            entries.push_back(entry.path());
        }
        return entries;
    }

    // The one cache file; fails the test if there is not exactly one entry.
    fs::path cache_file() const
    {
        const std::vector<fs::path> entries = cache_entries();
        BOOST_TEST_REQUIRE(entries.size() == 1u);
        return entries.front();
    }

    fs::path temp_path(std::string_view name) const { return home_.path() / name; }
    const fs::path& cert_file() const { return cert_file_; }

    fs::path next_output_prefix() const
    {
        return home_.path() / ("run-" + std::to_string(runs_++));
    }

private:
    temp_directory home_;
    fs::path cert_file_;
    mutable int runs_ = 0;

public:
    // Declared after the directory that receives its certificate.
    emulator::server server;
};

bool contains(std::string_view text, std::string_view part)
{
    return text.find(part) != std::string_view::npos;
}

// Returns the length of the longest run of base64url characters, the alphabet of the
// emulator's access tokens.
std::size_t longest_base64url_run(std::string_view text)
{
    std::size_t longest = 0;
    std::size_t current = 0;
    for (const char c : text) {
        const bool base64url =
            std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
        current = base64url ? current + 1 : 0;
        longest = std::max(longest, current);
    }
    return longest;
}

// A loopback port with a bound but not listening socket, so connections to it are refused.
class refused_port {
public:
    refused_port()
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        BOOST_TEST_REQUIRE(fd_ >= 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        BOOST_TEST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        socklen_t size = sizeof address;
        BOOST_TEST_REQUIRE(
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size) == 0);
        port_ = ntohs(address.sin_port);
    }

    refused_port(const refused_port&) = delete;
    refused_port& operator=(const refused_port&) = delete;
    ~refused_port() { ::close(fd_); }

    unsigned short port() const noexcept { return port_; }

private:
    int fd_ = -1;
    unsigned short port_ = 0;
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(stampede_token, tool_fixture)

BOOST_AUTO_TEST_CASE(prints_token_issued_by_server)
{
    const run_result first = run();
    BOOST_TEST_REQUIRE(first.exit_status == 0, first);
    BOOST_TEST(first.err == "");
    BOOST_TEST_REQUIRE(first.out.size() > 1u);
    BOOST_TEST(first.out.back() == '\n');
    const std::string token = first.out.substr(0, first.out.size() - 1);
    BOOST_TEST(token.find_first_of(" \t\r\n") == std::string::npos);

    const run_result header = run({"--header"});
    BOOST_TEST(header.exit_status == 0, header);
    BOOST_TEST(header.out == "authorization: Bearer " + token + "\n");
    BOOST_TEST(token_requests() == 1u);

    // The emulator revokes only a token that it issued and that is still valid.
    BOOST_TEST(server.revoke(token));
}

BOOST_AUTO_TEST_CASE(fifty_runs_send_one_request)
{
    const std::string token = fetch_token();
    for (int i = 1; i < 50; ++i) {
        BOOST_TEST_CONTEXT("run " << i + 1)
        {
            const run_result result = run();
            BOOST_TEST(result.exit_status == 0, result);
            BOOST_TEST(result.out == token + "\n");
        }
    }
    BOOST_TEST(token_requests() == 1u);
}

BOOST_AUTO_TEST_CASE(scopes_cached_apart)
{
    const run_result read_first = run({"--scope", "guests:read"});
    BOOST_TEST_REQUIRE(read_first.exit_status == 0, read_first);
    const run_result write_first = run({"--scope", "guests:read guests:write"});
    BOOST_TEST_REQUIRE(write_first.exit_status == 0, write_first);
    const run_result none_first = run();
    BOOST_TEST_REQUIRE(none_first.exit_status == 0, none_first);
    BOOST_TEST(token_requests() == 3u);
    BOOST_TEST(cache_entries().size() == 3u);
    BOOST_TEST(read_first.out != write_first.out);
    BOOST_TEST(read_first.out != none_first.out);

    // Each scope reuses its own token, whatever the order of its scope tokens.
    const run_result read_again = run({"--scope", "guests:read"});
    const run_result write_again = run({"--scope", "guests:write guests:read"});
    const run_result none_again = run();
    BOOST_TEST(read_again.out == read_first.out);
    BOOST_TEST(write_again.out == write_first.out);
    BOOST_TEST(none_again.out == none_first.out);
    BOOST_TEST(token_requests() == 3u);
}

BOOST_AUTO_TEST_CASE(auth_method_cached_apart)
{
    const std::string json_token = fetch_token();
    const run_result explicit_json = run({"--auth-method", "json_body"});
    BOOST_TEST(explicit_json.exit_status == 0, explicit_json);
    BOOST_TEST(explicit_json.out == json_token + "\n");
    BOOST_TEST(token_requests() == 1u);

    // The emulator takes JSON bodies only, so the form-encoded request is rejected. The
    // failure is not cached and does not touch the json_body entry.
    const run_result post = run({"--auth-method=client_secret_post"});
    BOOST_TEST(post.exit_status != 0, post);
    BOOST_TEST(post.out == "");
    BOOST_TEST(token_requests() == 2u);
    BOOST_TEST(cache_entries().size() == 1u);
    BOOST_TEST(fetch_token() == json_token);
}

BOOST_AUTO_TEST_CASE(cache_file_private_and_encrypted)
{
    const std::string token = fetch_token();

    BOOST_TEST(permission_bits(cache_directory()) == 0700u);
    const fs::path file = cache_file();
    BOOST_TEST(file.filename().string().size() == 64u + std::string_view(".token").size());
    BOOST_TEST(permission_bits(file) == 0600u);

    const std::string content = read_file(file);
    BOOST_TEST(content.size() > cache_header_size + 16 + token.size());
    BOOST_TEST(content.substr(0, 8) == "STMPTOKC");
    BOOST_TEST(!contains(content, token));
    BOOST_TEST(!contains(content, client_secret));
}

BOOST_AUTO_TEST_CASE(cache_directory_mode_restored)
{
    fetch_token();
    BOOST_TEST_REQUIRE(::chmod(cache_directory().c_str(), 0755) == 0);
    BOOST_TEST_REQUIRE(::unlink(cache_file().c_str()) == 0);

    fetch_token();
    BOOST_TEST(permission_bits(cache_directory()) == 0700u);
    BOOST_TEST(permission_bits(cache_file()) == 0600u);
    BOOST_TEST(token_requests() == 2u);
}

BOOST_AUTO_TEST_CASE(corrupt_cache_replaced)
{
    fetch_token();
    const fs::path file = cache_file();
    const std::string valid = read_file(file);

    auto flip = [&](std::size_t offset) {
        std::string changed = valid;
        changed[offset] = static_cast<char>(changed[offset] ^ 0x01);
        return changed;
    };
    const std::pair<std::string, std::string> corruptions[] = {
        {"empty", ""},
        {"text", "this is not a cache file\n"},
        {"truncated", valid.substr(0, valid.size() / 2)},
        {"header only", valid.substr(0, cache_header_size)},
        {"tag flipped", flip(valid.size() - 1)},
        {"ciphertext flipped", flip(cache_header_size + 2)},
        {"salt flipped", flip(10)},
        {"newer version", flip(8)},
        {"appended byte", valid + "x"},
    };

    std::uint64_t expected_requests = 1;
    for (const auto& [name, content] : corruptions) {
        BOOST_TEST_CONTEXT("corruption: " << name)
        {
            write_file(file, content, 0600);

            const run_result result = run();
            ++expected_requests;
            BOOST_TEST(result.exit_status == 0, result);
            BOOST_TEST(result.out.size() > 1u);
            BOOST_TEST(token_requests() == expected_requests);
            BOOST_TEST(read_file(cache_file()) != content);
            BOOST_TEST(permission_bits(cache_file()) == 0600u);

            // The replacement is used by the next run.
            const run_result again = run();
            BOOST_TEST(again.exit_status == 0, again);
            BOOST_TEST(again.out == result.out);
            BOOST_TEST(token_requests() == expected_requests);
        }
    }
}

BOOST_AUTO_TEST_CASE(cache_readable_by_others_ignored)
{
    const std::string first = fetch_token();
    BOOST_TEST_REQUIRE(::chmod(cache_file().c_str(), 0644) == 0);

    const std::string second = fetch_token();
    BOOST_TEST(token_requests() == 2u);
    BOOST_TEST(second != first);
    BOOST_TEST(permission_bits(cache_file()) == 0600u);
}

BOOST_AUTO_TEST_CASE(cache_from_other_secret_not_used)
{
    fetch_token();
    const fs::path file = cache_file();
    const std::string written = read_file(file);

    // The server rejects the other secret, so a run that used the cache would succeed.
    const run_result other = run_with(arguments(), environment(wrong_secret));
    BOOST_TEST(other.exit_status == 3, other);
    BOOST_TEST(other.out == "");
    BOOST_TEST(token_requests() == 2u);
    BOOST_TEST(read_file(file) == written);
}

BOOST_AUTO_TEST_CASE(cache_from_other_secret_replaced)
{
    const std::string old_token = fetch_token();
    const std::string old_content = read_file(cache_file());
    const std::vector<std::string> args = arguments();
    const unsigned short port = server.port();
    server.stop();

    // The same client with a new secret, at the same token URL, so the cache file name is
    // the same.
    constexpr std::string_view new_secret = "rotated-secret-Vb8kN3";
    emulator::server rotated(
        emulator_options(cert_file(), new_secret, "127.0.0.1:" + std::to_string(port)));
    rotated.start();
    BOOST_TEST_REQUIRE(rotated.token_url() == args.at(1));

    const run_result result = run_with(args, environment(new_secret));
    BOOST_TEST_REQUIRE(result.exit_status == 0, result);
    const std::string new_token = result.out.substr(0, result.out.size() - 1);
    BOOST_TEST(new_token != old_token);
    BOOST_TEST(rotated.get_stats().token_requests == 1u);
    BOOST_TEST(read_file(cache_file()) != old_content);
    BOOST_TEST(rotated.revoke(new_token));
}

BOOST_AUTO_TEST_CASE(no_cache_requests_every_run)
{
    for (int i = 0; i < 3; ++i) {
        const run_result result = run({"--no-cache"});
        BOOST_TEST(result.exit_status == 0, result);
    }
    BOOST_TEST(token_requests() == 3u);
    BOOST_TEST(cache_entries().empty());
}

BOOST_AUTO_TEST_CASE(no_cache_ignores_existing_cache)
{
    const std::string cached = fetch_token();
    const std::string content = read_file(cache_file());

    const run_result result = run({"--no-cache"});
    BOOST_TEST(result.exit_status == 0, result);
    BOOST_TEST(result.out != cached + "\n");
    BOOST_TEST(token_requests() == 2u);
    BOOST_TEST(read_file(cache_file()) == content);
}

BOOST_AUTO_TEST_CASE(concurrent_runs_leave_one_whole_file)
{
    constexpr int processes = 8;
    std::vector<std::unique_ptr<tool_process>> running;
    for (int i = 0; i < processes; ++i) {
        running.push_back(
            std::make_unique<tool_process>(arguments(), environment(), next_output_prefix()));
    }
    for (int i = 0; i < processes; ++i) {
        const run_result result = running[static_cast<std::size_t>(i)]->wait();
        BOOST_TEST(result.exit_status == 0, "process " << i << ": " << result);
    }

    // Whichever write came last, the file is whole and the next run uses it.
    BOOST_TEST(cache_entries().size() == 1u);
    const std::uint64_t requests = token_requests();
    BOOST_TEST(requests >= 1u);
    fetch_token();
    BOOST_TEST(token_requests() == requests);
}

BOOST_AUTO_TEST_CASE(wrong_secret_exits_3)
{
    for (const bool verbose : {false, true}) {
        BOOST_TEST_CONTEXT("verbose: " << verbose)
        {
            std::vector<std::string> args = arguments();
            if (verbose) {
                args.push_back("--verbose");
            }
            const run_result result = run_with(args, environment(wrong_secret));
            BOOST_TEST(result.exit_status == 3, result);
            BOOST_TEST(result.out == "");
            BOOST_TEST(contains(result.err, "invalid_client"));
            BOOST_TEST(contains(result.err, "STAMPEDE_CLIENT_SECRET"));
            BOOST_TEST(!contains(result.err, wrong_secret));
        }
    }
    BOOST_TEST(cache_entries().empty());
}

BOOST_AUTO_TEST_CASE(echoed_secret_not_printed)
{
    // The emulator puts the secret and a working access token into its error description.
    server.set_fault_script("echo-secret");
    const run_result result = run({"--verbose"});
    BOOST_TEST(result.exit_status == 3, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(!contains(result.err, client_secret));

    const std::string_view marker = "server message (untrusted): ";
    const auto line_start = result.err.find(marker);
    BOOST_TEST_REQUIRE(line_start != std::string::npos);
    const std::string_view rest = std::string_view(result.err).substr(line_start);
    const std::string_view server_line = rest.substr(0, rest.find('\n'));
    BOOST_TEST(contains(server_line, "[redacted]"));
    BOOST_TEST(longest_base64url_run(server_line) < 32u, server_line);
}

BOOST_AUTO_TEST_CASE(verbose_logs_to_stderr_only)
{
    const run_result first = run({"--verbose"});
    BOOST_TEST_REQUIRE(first.exit_status == 0, first);
    BOOST_TEST_REQUIRE(first.out.size() > 1u);
    const std::string token = first.out.substr(0, first.out.size() - 1);
    BOOST_TEST(contains(first.err, "debug stampede:"));
    BOOST_TEST(contains(first.err, "written"));
    BOOST_TEST(!contains(first.err, token));
    BOOST_TEST(!contains(first.err, client_secret));

    const run_result second = run({"--verbose"});
    BOOST_TEST(second.exit_status == 0, second);
    BOOST_TEST(second.out == first.out);
    BOOST_TEST(contains(second.err, "token cache hit"));
    BOOST_TEST(!contains(second.err, token));
}

BOOST_AUTO_TEST_CASE(unreachable_port_exits_5)
{
    const refused_port refused;
    const std::string url = "https://127.0.0.1:" + std::to_string(refused.port()) + "/oauth/token";
    const run_result result =
        run_with({"--token-url", url, "--ca-file", cert_file().string()}, environment());
    BOOST_TEST(result.exit_status == 5, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "--token-url"));
    BOOST_TEST(contains(result.err, "Gave up after 3 attempts"), result);
    BOOST_TEST(!contains(result.err, "next call"), result);
}

BOOST_AUTO_TEST_CASE(wrong_ca_exits_6)
{
    const fs::path other_cert = temp_path("other.pem");
    emulator::server other(emulator_options(other_cert, client_secret));
    other.start();

    const run_result result =
        run_with({"--token-url", server.token_url(), "--ca-file", other_cert.string()},
                 environment());
    BOOST_TEST(result.exit_status == 6, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "--ca-file"));
    BOOST_TEST(!contains(result.err, "transport"), result);
    BOOST_TEST(token_requests() == 0u);
}

// Without --ca-file or STAMPEDE_CA_FILE the system store does not trust the emulator's
// self-signed certificate, and the message names this program's ways to trust it.
BOOST_AUTO_TEST_CASE(missing_ca_names_options)
{
    const run_result result = run_with({"--token-url", server.token_url()}, environment());
    BOOST_TEST(result.exit_status == 6, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "certificate verification failed"), result);
    BOOST_TEST(contains(result.err, "with --ca-file or STAMPEDE_CA_FILE"), result);
    BOOST_TEST(!contains(result.err, "transport"), result);
    BOOST_TEST(token_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(missing_ca_file_exits_2)
{
    const std::string missing = temp_path("missing.pem").string();
    const run_result result =
        run_with({"--token-url", server.token_url(), "--ca-file", missing}, environment());
    BOOST_TEST(result.exit_status == 2, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "CA file \"" + missing + "\" is not a readable file"),
               result);
    BOOST_TEST(contains(result.err, "set --ca-file or STAMPEDE_CA_FILE"), result);
    BOOST_TEST(!contains(result.err, "transport"), result);
}

BOOST_AUTO_TEST_CASE(rate_limited_exits_4)
{
    server.set_fault_script("429*");
    const run_result result = run();
    BOOST_TEST(result.exit_status == 4, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(contains(result.err, "limits requests per client"));

    // One request and two retries, then the tool gives up.
    BOOST_TEST(token_requests() == 3u);
}

BOOST_AUTO_TEST_CASE(oauth_rate_limit_code_exits_4)
{
    server.set_fault_script("oauth-error:slow_down:400*");
    const run_result result = run();
    BOOST_TEST(result.exit_status == 4, result);
    BOOST_TEST(result.out == "");
}

BOOST_AUTO_TEST_CASE(server_error_exits_7)
{
    server.set_fault_script("5xx-html:503*");
    const run_result result = run();
    BOOST_TEST(result.exit_status == 7, result);
    BOOST_TEST(result.out == "");
    BOOST_TEST(token_requests() == 3u);
}

BOOST_AUTO_TEST_CASE(malformed_response_exits_7)
{
    server.set_fault_script("garbage-json*");
    const run_result result = run();
    BOOST_TEST(result.exit_status == 7, result);
    BOOST_TEST(contains(result.err, "server message (untrusted)"));
}

BOOST_AUTO_TEST_CASE(missing_credentials_exit_2)
{
    const run_result none = run_with(arguments(), environment_without_credentials());
    BOOST_TEST(none.exit_status == 2, none);
    BOOST_TEST(none.out == "");
    BOOST_TEST(contains(none.err, "STAMPEDE_CLIENT_ID"));
    BOOST_TEST(contains(none.err, "--credentials-file"));

    std::vector<std::string> id_only = environment_without_credentials();
    id_only.push_back("STAMPEDE_CLIENT_ID=" + std::string(client_id));
    const run_result no_secret = run_with(arguments(), id_only);
    BOOST_TEST(no_secret.exit_status == 2, no_secret);
    BOOST_TEST(contains(no_secret.err, "STAMPEDE_CLIENT_SECRET"));

    std::vector<std::string> secret_only = environment_without_credentials();
    secret_only.push_back("STAMPEDE_CLIENT_SECRET=" + std::string(client_secret));
    const run_result no_id = run_with(arguments(), secret_only);
    BOOST_TEST(no_id.exit_status == 2, no_id);
    BOOST_TEST(contains(no_id.err, "STAMPEDE_CLIENT_ID"));
    BOOST_TEST(!contains(no_id.err, client_secret));

    BOOST_TEST(token_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(credentials_file_used)
{
    const fs::path file = temp_path("credentials");
    write_file(file,
               "# Stampede API key\n"
               "client_id = " + std::string(client_id) + "\n"
               "\n"
               "client_secret=" + std::string(client_secret) + "\r\n",
               0600);
    const run_result result =
        run_with(arguments({"--credentials-file", file.string()}),
                 environment_without_credentials());
    BOOST_TEST(result.exit_status == 0, result);
    BOOST_TEST(result.out.size() > 1u);
    BOOST_TEST(token_requests() == 1u);
}

BOOST_AUTO_TEST_CASE(client_id_option_overrides)
{
    const fs::path file = temp_path("secret-only");
    write_file(file, "client_secret=" + std::string(client_secret) + "\n", 0600);
    const run_result result = run_with(
        arguments({"--credentials-file", file.string(), "--client-id", std::string(client_id)}),
        environment_without_credentials());
    BOOST_TEST(result.exit_status == 0, result);

    // A wrong id from the environment is replaced by --client-id.
    std::vector<std::string> env = environment();
    env[2] = "STAMPEDE_CLIENT_ID=someone-else";
    const run_result overridden =
        run_with(arguments({"--no-cache", "--client-id", std::string(client_id)}), env);
    BOOST_TEST(overridden.exit_status == 0, overridden);
}

BOOST_AUTO_TEST_CASE(credentials_file_checked)
{
    const fs::path open_file = temp_path("open-credentials");
    write_file(open_file,
               "client_id=" + std::string(client_id) + "\nclient_secret=" +
                   std::string(client_secret) + "\n",
               0644);
    const run_result too_open = run_with(arguments({"--credentials-file", open_file.string()}),
                                         environment_without_credentials());
    BOOST_TEST(too_open.exit_status == 2, too_open);
    BOOST_TEST(contains(too_open.err, "chmod 600"));

    const fs::path bad_line = temp_path("bad-credentials");
    write_file(bad_line,
               "client_id=" + std::string(client_id) + "\n" + std::string(client_secret) + "\n",
               0600);
    const run_result malformed = run_with(arguments({"--credentials-file", bad_line.string()}),
                                          environment_without_credentials());
    BOOST_TEST(malformed.exit_status == 2, malformed);
    BOOST_TEST(contains(malformed.err, "line 2"));
    BOOST_TEST(!contains(malformed.err, client_secret));

    const run_result missing = run_with(
        arguments({"--credentials-file", temp_path("absent").string()}), environment());
    BOOST_TEST(missing.exit_status == 2, missing);
    BOOST_TEST(token_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(secret_option_rejected)
{
    const std::string secret_text = "typed-secret-Lr2sD8";
    const std::vector<std::vector<std::string>> attempts = {
        {"--client-secret", secret_text},
        {"--client-secret=" + secret_text},
        {secret_text},
    };
    for (const auto& extra : attempts) {
        BOOST_TEST_CONTEXT("arguments: " << extra.size())
        {
            const run_result result = run(extra);
            BOOST_TEST(result.exit_status == 2, result);
            BOOST_TEST(result.out == "");
            BOOST_TEST(!contains(result.err, secret_text));
        }
    }
    BOOST_TEST(token_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(usage_errors_exit_2)
{
    // Each case follows the emulator's --token-url, so that no request could leave loopback;
    // the plain-HTTP URL is rejected before any connection.
    const std::vector<std::vector<std::string>> cases = {
        {"--no-such-option"},
        {"--token-url"},
        {"--header=yes"},
        {"--token-url", "http://example.com/oauth/token"},
        {"--auth-method", "basic"},
        {"--auth-method=client_secret_jwt"},
        {"--auth-method"},
        {"--scope", "guests:read  guests:write"},
        {"--scope", "guests\"read"},
    };
    for (const auto& extra : cases) {
        BOOST_TEST_CONTEXT("first argument: " << extra.front())
        {
            const run_result result = run(extra);
            BOOST_TEST(result.exit_status == 2, result);
            BOOST_TEST(result.out == "");
            BOOST_TEST(!result.err.empty());
        }
    }
}

BOOST_AUTO_TEST_CASE(invalid_auth_method_explained)
{
    const run_result result = run({"--auth-method", "client-secret-basic"});
    BOOST_TEST(result.exit_status == 2, result);
    BOOST_TEST(contains(result.err, "--auth-method has an invalid value"));
    BOOST_TEST(contains(result.err, "client_secret_basic"));
    BOOST_TEST(!contains(result.err, "client-secret-basic"));
    BOOST_TEST(token_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(invalid_scope_explained)
{
    const run_result result = run({"--scope", " guests:read"});
    BOOST_TEST(result.exit_status == 2, result);
    BOOST_TEST(contains(result.err, "scope"));
    BOOST_TEST(contains(result.err, "single spaces"));
    BOOST_TEST(token_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(help_documents_options)
{
    const run_result help = run_with({"--help"}, environment_without_credentials());
    BOOST_TEST(help.exit_status == 0, help);
    for (const char* text :
         {"--credentials-file", "--client-id", "--token-url", "--ca-file", "--auth-method",
          "json_body", "client_secret_post", "client_secret_basic", "--scope", "--header",
          "--no-cache", "--verbose", "--help", "--version", "STAMPEDE_CLIENT_ID",
          "STAMPEDE_CLIENT_SECRET", "XDG_CACHE_HOME", ".cache/stampede", "Exit status"}) {
        BOOST_TEST(contains(help.out, text), "help text lacks " << text);
    }
    for (int status = 0; status <= 7; ++status) {
        BOOST_TEST(contains(help.out, "\n  " + std::to_string(status) + "  "),
                   "help text lacks exit status " << status);
    }

    const run_result version = run_with({"--version"}, environment_without_credentials());
    BOOST_TEST(version.exit_status == 0, version);
    BOOST_TEST(version.out.starts_with("stampede-token "));
}

BOOST_AUTO_TEST_SUITE_END()
