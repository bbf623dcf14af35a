#pragma once
// PersistentMap<V>: a hash array mapped trie (HAMT) keyed by strings, with structural
// sharing. Copying a map is O(1) (it shares the root); a copy never changes afterwards, so
// a copy handed to readers is an immutable snapshot that any number of threads may read
// with no lock while the owner goes on changing its own map.
//
// The owner changes its map in place where no copy shares the nodes on the path (reference
// count 1), and copies only the shared nodes of that path otherwise (path copying): after a
// snapshot, the first change under each node costs one node copy, later ones none.
//
// Thread rules: one thread changes a given map object; copies (snapshots) may be read and
// destroyed by any thread at the same time. Reference counts are atomic; a node is only
// mutated when its count is 1 on a path from the writer's own root, so no snapshot can
// reach it.
//
// Keys are hashed with a keyed hash (SipHash-1-3, a random key per process), so attackers
// who choose keys (called numbers) cannot choose collisions. Full 64-bit collisions are
// kept in a linear collision node.

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <utility>

namespace sp::core {

// SipHash-1-3 of s with this process's random key.
std::uint64_t keyedHash(std::string_view s) noexcept;

struct KeyedHash {
    std::uint64_t operator()(std::string_view s) const noexcept { return keyedHash(s); }
};

// Hash: a 64-bit hash of the key (tests pass weak ones to force deep paths and collisions).
template <typename V, typename Hash = KeyedHash> class PersistentMap {
    struct Node {
        std::atomic<std::uint32_t> refs{1};
        bool leaf;
        explicit Node(bool is_leaf) : leaf(is_leaf) {}
    };
    struct Leaf : Node {
        std::uint64_t hash;
        std::string key;
        V value;
        Leaf(std::uint64_t h, std::string_view k) : Node(true), hash(h), key(k), value{} {}
        Leaf(const Leaf& o) : Node(true), hash(o.hash), key(o.key), value(o.value) {}
    };
    // Children in bitmap order (a popcount of the lower bits gives a child's slot). A
    // collision branch (below the last hash bits) holds leaves of one hash, unordered.
    // The `capacity` child pointers are allocated right after the struct (see slots()).
    struct alignas(Node*) Branch : Node {
        std::uint32_t bitmap = 0;
        std::uint16_t count = 0;
        std::uint16_t capacity = 0;
        bool collision = false;
        Branch() : Node(false) {}
        Node** slots() { return reinterpret_cast<Node**>(this + 1); }
        Node* const* slots() const { return reinterpret_cast<Node* const*>(this + 1); }
    };

    static constexpr unsigned kBits = 5;
    static constexpr std::uint32_t kMask = (1U << kBits) - 1;
    static constexpr unsigned kMaxShift = 64; // at or beyond: a collision branch

public:
    PersistentMap() = default;
    PersistentMap(const PersistentMap& o) noexcept : root_(o.root_), size_(o.size_) {
        retain(root_);
    }
    PersistentMap(PersistentMap&& o) noexcept
        : root_(std::exchange(o.root_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    PersistentMap& operator=(PersistentMap o) noexcept {
        std::swap(root_, o.root_);
        std::swap(size_, o.size_);
        return *this;
    }
    ~PersistentMap() { release(root_); }

    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    const V* find(std::string_view key) const {
        const std::uint64_t h = Hash{}(key);
        const Node* n = root_;
        for (unsigned shift = 0; n != nullptr; shift += kBits) {
            if (n->leaf) {
                const auto* l = static_cast<const Leaf*>(n);
                return l->hash == h && l->key == key ? &l->value : nullptr;
            }
            const auto* b = static_cast<const Branch*>(n);
            if (b->collision) {
                for (std::uint16_t i = 0; i < b->count; ++i) {
                    const auto* l = static_cast<const Leaf*>(b->slots()[i]);
                    if (l->key == key) {
                        return &l->value;
                    }
                }
                return nullptr;
            }
            const std::uint32_t bit = 1U << ((h >> shift) & kMask);
            if ((b->bitmap & bit) == 0) {
                return nullptr;
            }
            n = b->slots()[std::popcount(b->bitmap & (bit - 1))];
        }
        return nullptr;
    }

    // Forward iteration in no particular order; *it is a (key, value) pair of references
    // into this map, valid while the map (or a copy sharing its nodes) lives.
    class ConstIterator {
    public:
        using value_type = std::pair<std::string_view, const V&>;
        ConstIterator() = default;
        value_type operator*() const {
            const auto* l = static_cast<const Leaf*>(leaf_);
            return {std::string_view(l->key), l->value};
        }
        ConstIterator& operator++() {
            advance();
            return *this;
        }
        bool operator==(const ConstIterator& o) const { return leaf_ == o.leaf_; }

    private:
        friend class PersistentMap;
        explicit ConstIterator(const Node* root) {
            if (root != nullptr) {
                descend(root);
            }
        }
        // Walks down the leftmost path from n to a leaf.
        void descend(const Node* n) {
            while (!n->leaf) {
                const auto* b = static_cast<const Branch*>(n);
                stack_[depth_++] = {b, 0};
                n = b->slots()[0];
            }
            leaf_ = n;
        }
        void advance() {
            while (depth_ > 0) {
                auto& [b, i] = stack_[depth_ - 1];
                if (++i < b->count) {
                    descend(b->slots()[i]);
                    return;
                }
                --depth_;
            }
            leaf_ = nullptr;
        }
        std::pair<const Branch*, std::uint16_t> stack_[kMaxShift / kBits + 2]{};
        std::size_t depth_ = 0;
        const Node* leaf_ = nullptr;
    };
    ConstIterator begin() const { return ConstIterator(root_); }
    ConstIterator end() const { return ConstIterator(); }

    // f(std::string_view key, const V& value) for every entry, in no particular order.
    template <typename F> void forEach(F&& f) const { visit(root_, f); }

    // The value for key, inserted (value-initialised) when absent; `inserted` says which. The
    // pointer is valid until the next change of this map. Writer only.
    V& upsert(std::string_view key, bool& inserted) {
        const std::uint64_t h = Hash{}(key);
        Node** slot = &root_;
        for (unsigned shift = 0;; shift += kBits) {
            Node* n = *slot;
            if (n == nullptr) {
                auto* l = new Leaf(h, key);
                *slot = l;
                ++size_;
                inserted = true;
                return l->value;
            }
            if (n->leaf) {
                auto* l = static_cast<Leaf*>(n);
                if (l->hash == h && l->key == key) {
                    inserted = false;
                    return exclusiveLeaf(slot)->value;
                }
                // Another key here: a branch takes both (the slot's reference moves into it).
                auto* fresh = new Leaf(h, key);
                *slot = branchOfTwo(l, fresh, shift);
                ++size_;
                inserted = true;
                return fresh->value;
            }
            auto* b = exclusiveBranch(slot);
            if (b->collision) {
                for (std::uint16_t i = 0; i < b->count; ++i) {
                    if (static_cast<Leaf*>(b->slots()[i])->key == key) {
                        inserted = false;
                        return exclusiveLeaf(&b->slots()[i])->value;
                    }
                }
                auto* fresh = new Leaf(h, key);
                *slot = insertSlot(b, b->count, fresh);
                ++size_;
                inserted = true;
                return fresh->value;
            }
            const std::uint32_t bit = 1U << ((h >> shift) & kMask);
            const auto pos = static_cast<std::uint16_t>(std::popcount(b->bitmap & (bit - 1)));
            if ((b->bitmap & bit) == 0) {
                auto* fresh = new Leaf(h, key);
                Branch* nb = insertSlot(b, pos, fresh);
                nb->bitmap |= bit;
                *slot = nb;
                ++size_;
                inserted = true;
                return fresh->value;
            }
            slot = &b->slots()[pos];
        }
    }

    // The value for key to change, or nullptr when absent (nothing is copied then). The
    // pointer is valid until the next change of this map. Writer only.
    V* findMutable(std::string_view key) {
        if (find(key) == nullptr) {
            return nullptr;
        }
        bool inserted = false;
        return &upsert(key, inserted);
    }

    // Removes key; false when absent. Writer only.
    bool erase(std::string_view key) {
        if (find(key) == nullptr) {
            return false;
        }
        const std::uint64_t h = Hash{}(key);
        Node** path[kMaxShift / kBits + 2];
        std::size_t depth = 0;
        Node** slot = &root_;
        for (unsigned shift = 0;; shift += kBits) {
            Node* n = *slot;
            if (n->leaf) { // the key's leaf (find said it is here): the root itself
                release(n);
                *slot = nullptr;
                break;
            }
            auto* b = exclusiveBranch(slot);
            path[depth++] = slot;
            std::uint16_t pos = 0;
            if (b->collision) {
                while (static_cast<Leaf*>(b->slots()[pos])->key != key) {
                    ++pos;
                }
            } else {
                const std::uint32_t bit = 1U << ((h >> shift) & kMask);
                pos = static_cast<std::uint16_t>(std::popcount(b->bitmap & (bit - 1)));
                Node* child = b->slots()[pos];
                if (!child->leaf) {
                    slot = &b->slots()[pos];
                    continue;
                }
                b->bitmap &= ~bit;
            }
            release(b->slots()[pos]);
            std::copy(b->slots() + pos + 1, b->slots() + b->count, b->slots() + pos);
            --b->count;
            break;
        }
        --size_;
        // Back up the path: an empty branch goes, a branch left with one leaf becomes that leaf.
        while (depth > 0) {
            Node** s = path[--depth];
            auto* b = static_cast<Branch*>(*s);
            if (b->count == 0) {
                freeBranch(b);
                *s = nullptr;
                if (depth > 0) { // remove the empty slot from the parent
                    auto* parent = static_cast<Branch*>(*path[depth - 1]);
                    auto pos = static_cast<std::uint16_t>(s - parent->slots());
                    removeNullSlot(parent, pos, h, depth - 1);
                }
                continue;
            }
            if (b->count == 1 && b->slots()[0]->leaf) {
                *s = b->slots()[0]; // the leaf's reference moves up
                b->count = 0;
                freeBranch(b);
                continue;
            }
            break;
        }
        return true;
    }

private:
    static void retain(Node* n) {
        if (n != nullptr) {
            n->refs.fetch_add(1, std::memory_order_relaxed);
        }
    }
    static void release(Node* n) {
        if (n == nullptr || n->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) {
            return;
        }
        if (n->leaf) {
            delete static_cast<Leaf*>(n);
            return;
        }
        auto* b = static_cast<Branch*>(n);
        for (std::uint16_t i = 0; i < b->count; ++i) {
            release(b->slots()[i]);
        }
        freeBranch(b);
    }
    static bool shared(const Node* n) { return n->refs.load(std::memory_order_acquire) != 1; }

    static Branch* allocBranch(std::uint16_t capacity) {
        capacity = std::max<std::uint16_t>(capacity, 1);
        // The child pointers follow the struct (see Branch::slots()).
        // NOLINTNEXTLINE(bugprone-sizeof-expression): room for `capacity` pointers, on purpose
        void* mem = ::operator new(sizeof(Branch) + sizeof(Node*) * capacity);
        auto* b = new (mem) Branch();
        b->capacity = capacity;
        return b;
    }
    static void freeBranch(Branch* b) {
        b->~Branch();
        ::operator delete(b);
    }
    static std::uint16_t roundUp(std::uint16_t n) {
        return static_cast<std::uint16_t>((n + 3) & ~3);
    }

    // The leaf in *slot, copied first if a snapshot shares it.
    static Leaf* exclusiveLeaf(Node** slot) {
        auto* l = static_cast<Leaf*>(*slot);
        if (shared(l)) {
            auto* copy = new Leaf(*l);
            release(l);
            *slot = copy;
            return copy;
        }
        return l;
    }
    // The branch in *slot, copied first if a snapshot shares it (children are shared then).
    static Branch* exclusiveBranch(Node** slot) {
        auto* b = static_cast<Branch*>(*slot);
        if (!shared(b)) {
            return b;
        }
        Branch* copy = allocBranch(b->capacity);
        copy->bitmap = b->bitmap;
        copy->count = b->count;
        copy->collision = b->collision;
        for (std::uint16_t i = 0; i < b->count; ++i) {
            copy->slots()[i] = b->slots()[i];
            retain(b->slots()[i]);
        }
        release(b);
        *slot = copy;
        return copy;
    }
    // Inserts child at pos of an exclusive branch, growing it (a new allocation) when full.
    static Branch* insertSlot(Branch* b, std::uint16_t pos, Node* child) {
        if (b->count == b->capacity) {
            Branch* grown = allocBranch(roundUp(static_cast<std::uint16_t>(b->count + 1)));
            grown->bitmap = b->bitmap;
            grown->collision = b->collision;
            grown->count = b->count;
            std::copy(b->slots(), b->slots() + b->count, grown->slots());
            freeBranch(b); // its references moved to `grown`
            b = grown;
        }
        std::copy_backward(b->slots() + pos, b->slots() + b->count, b->slots() + b->count + 1);
        b->slots()[pos] = child;
        ++b->count;
        return b;
    }
    // A branch at `shift` holding two leaves of different keys.
    static Node* branchOfTwo(Leaf* a, Leaf* b, unsigned shift) {
        if (shift >= kMaxShift) {
            Branch* c = allocBranch(4);
            c->collision = true;
            c->slots()[0] = a;
            c->slots()[1] = b;
            c->count = 2;
            return c;
        }
        const std::uint32_t ia = (a->hash >> shift) & kMask;
        const std::uint32_t ib = (b->hash >> shift) & kMask;
        Branch* br = allocBranch(ia == ib ? 1 : 2);
        if (ia == ib) {
            br->bitmap = 1U << ia;
            br->slots()[0] = branchOfTwo(a, b, shift + kBits);
            br->count = 1;
        } else {
            br->bitmap = (1U << ia) | (1U << ib);
            br->slots()[0] = ia < ib ? a : b;
            br->slots()[1] = ia < ib ? b : a;
            br->count = 2;
        }
        return br;
    }
    // After a child branch at `pos` of parent (depth d on the key's path) was freed.
    static void removeNullSlot(Branch* parent, std::uint16_t pos, std::uint64_t h, std::size_t d) {
        if (!parent->collision) {
            parent->bitmap &= ~(1U << ((h >> (d * kBits)) & kMask));
        }
        std::copy(parent->slots() + pos + 1, parent->slots() + parent->count,
                  parent->slots() + pos);
        --parent->count;
    }

    template <typename F> static void visit(const Node* n, F& f) {
        if (n == nullptr) {
            return;
        }
        if (n->leaf) {
            const auto* l = static_cast<const Leaf*>(n);
            f(std::string_view(l->key), l->value);
            return;
        }
        const auto* b = static_cast<const Branch*>(n);
        for (std::uint16_t i = 0; i < b->count; ++i) {
            visit(b->slots()[i], f);
        }
    }

    Node* root_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace sp::core
