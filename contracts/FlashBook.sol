// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title FlashBook: a gas-lean on-chain limit order book for market makers on Sei EVM.
/// @notice Units. A market trades a base token against a quote token. Prices are integer
/// ticks, sizes integer lots:
///   - `lotUnits`  = base-token base units per lot   (lot_size  * 10**baseDecimals)
///   - `tickValue` = quote-token base units per tick per lot
///                   (tick_size * lot_size * 10**quoteDecimals)
/// so `size` lots at `price` ticks are `size * lotUnits` base units and
/// `price * size * tickValue` quote units. A resting buy locks the quote amount, a
/// resting sell locks the base amount; both are released on cancel.
///
/// Storage is laid out for Sei, where a zero-to-nonzero SSTORE costs 72,000 gas:
///   - each owner has 256 order slots per market, chosen by the client; a slot is reused
///     and its word never returns to zero (bit 255 is a sentinel);
///   - price levels are FIFO queues linked through the order words; four levels share
///     one storage word (head and tail, 32 bits each); an emptied level keeps its stale
///     tail, so a level word never returns to zero either;
///   - a per-side tick bitmap (255 ticks per word plus a sentinel bit) and best-price
///     hints in the market word find the top of the book;
///   - balances live in one word per (owner, market) account: quote 128 bits, base 120.
/// Steady-state requoting therefore writes no fresh storage slot.
contract FlashBook {
    // ------------------------------------------------------------------ constants
    uint256 private constant SENTINEL = 1 << 255;
    uint256 private constant LIVE = 1 << 225;
    uint256 private constant U16 = 0xffff;
    uint256 private constant U32 = 0xffffffff;
    uint256 private constant U64 = 0xffffffffffffffff;
    uint256 private constant U96 = (1 << 96) - 1;
    uint256 private constant U120 = (1 << 120) - 1;
    uint256 private constant U128 = (1 << 128) - 1;
    uint256 private constant NO_ASK = 0xffffffff;
    uint256 private constant MAX_TICK = 0xfffffffe;
    uint256 private constant TPW = 255; // ticks per bitmap word; bit 255 is the sentinel
    uint256 private constant MAX_SCAN_WORDS = 64;

    /// Requote op kinds (bits 176..183 of an op word).
    uint256 public constant OP_CANCEL = 0;
    uint256 public constant OP_PLACE = 1;
    uint256 public constant OP_REPLACE = 2;

    /// OrderRejected reasons (bits 192..199 of the event info word).
    uint256 public constant REJECT_CROSS = 1;
    uint256 public constant REJECT_SLOT_BUSY = 2;
    uint256 public constant REJECT_FUNDS = 3;
    uint256 public constant REJECT_BAD_ORDER = 4;

    // ------------------------------------------------------------------ events
    // `info` packs one order (LSB first): clientId 0..63 | price 64..95 | size 96..159 |
    // side 160 (0 bid, 1 ask) | slot 168..175 | market 176..191 | extra 192..255.
    // extra = reject reason for OrderRejected, the replaced client id for OrderReplaced,
    // the maker order's remaining lots for Fill.
    event OrderPlaced(address indexed owner, uint256 info);
    event OrderCancelled(address indexed owner, uint256 info);
    event OrderRejected(address indexed owner, uint256 info);
    event OrderReplaced(address indexed owner, uint256 info);
    event Fill(address indexed maker, address indexed taker, uint256 info);
    event Deposit(address indexed owner, uint256 indexed market, uint256 baseAmount, uint256 quoteAmount);
    event Withdraw(address indexed owner, uint256 indexed market, uint256 baseAmount, uint256 quoteAmount);
    event MarketCreated(
        uint256 indexed market, address base, address quote, uint256 tickValue, uint256 lotUnits
    );

    // ------------------------------------------------------------------ errors
    error NotAdmin();
    error NoAccount();
    error UnknownMarket();
    error BadMarket();
    error InsufficientBalance();
    error TransferFailed();
    error BadSide();

    // ------------------------------------------------------------------ storage
    address public immutable admin;
    uint256 public marketCount;
    uint256 public traderCount;
    mapping(address => uint256) public traderIndex;
    mapping(uint256 => address) public traderAddress;
    mapping(uint256 => address) public baseToken;
    mapping(uint256 => address) public quoteToken;
    // market word: tickValue 0..63 | lotUnits 64..159 | bestBid 160..191 | bestAsk 192..223 |
    //              bidLevels 224..239 | askLevels 240..255
    mapping(uint256 => uint256) internal _markets;
    // order word (key market << 32 | ref, ref = trader << 8 | slot): clientId 0..63 |
    // price 64..95 | size 96..159 | prev 160..191 | next 192..223 | ask 224 | live 225 | sentinel 255
    mapping(uint256 => uint256) internal _orders;
    // level word (key market << 33 | side << 32 | tick >> 2): 4 x (head 32 | tail 32)
    mapping(uint256 => uint256) internal _levels;
    // bitmap word (key market << 33 | side << 32 | tick / 255)
    mapping(uint256 => uint256) internal _bitmaps;
    // account word (key trader << 16 | market): quote 0..127 | base 128..247 | sentinel 255
    mapping(uint256 => uint256) internal _accounts;

    /// Working state of one call, kept in memory and written back once.
    struct Ctx {
        uint256 market;
        uint256 mkt;
        uint256 trader;
        uint256 quote;
        uint256 base;
        uint256 mkt0; // market word as read
        uint256 acct0; // account word as read
    }

    constructor() {
        admin = msg.sender;
    }

    // ================================================================== admin
    function createMarket(address base, address quote, uint256 tickValue, uint256 lotUnits)
        external
        returns (uint256 market)
    {
        if (msg.sender != admin) revert NotAdmin();
        if (tickValue == 0 || tickValue > U64 || lotUnits == 0 || lotUnits > U96) revert BadMarket();
        if (base == address(0) || quote == address(0) || base == quote) revert BadMarket();
        market = ++marketCount;
        if (market > U16) revert BadMarket();
        baseToken[market] = base;
        quoteToken[market] = quote;
        _markets[market] = tickValue | (lotUnits << 64) | (NO_ASK << 192);
        emit MarketCreated(market, base, quote, tickValue, lotUnits);
    }

    // ================================================================== funds
    function deposit(uint256 market, uint256 baseAmount, uint256 quoteAmount) external {
        if (_markets[market] == 0) revert UnknownMarket();
        uint256 trader = traderIndex[msg.sender];
        if (trader == 0) {
            trader = ++traderCount;
            if (trader >= 1 << 24) revert NoAccount();
            traderIndex[msg.sender] = trader;
            traderAddress[trader] = msg.sender;
        }
        uint256 key = (trader << 16) | market;
        uint256 acct = _accounts[key];
        uint256 q = (acct & U128) + quoteAmount;
        uint256 b = ((acct >> 128) & U120) + baseAmount;
        if (q > U128 || b > U120) revert InsufficientBalance();
        _accounts[key] = SENTINEL | (b << 128) | q;
        if (baseAmount != 0) _pull(baseToken[market], baseAmount);
        if (quoteAmount != 0) _pull(quoteToken[market], quoteAmount);
        emit Deposit(msg.sender, market, baseAmount, quoteAmount);
    }

    function withdraw(uint256 market, uint256 baseAmount, uint256 quoteAmount) external {
        uint256 trader = traderIndex[msg.sender];
        if (trader == 0) revert NoAccount();
        uint256 key = (trader << 16) | market;
        uint256 acct = _accounts[key];
        uint256 q = acct & U128;
        uint256 b = (acct >> 128) & U120;
        if (q < quoteAmount || b < baseAmount) revert InsufficientBalance();
        _accounts[key] = SENTINEL | ((b - baseAmount) << 128) | (q - quoteAmount);
        if (baseAmount != 0) _push(baseToken[market], baseAmount);
        if (quoteAmount != 0) _push(quoteToken[market], quoteAmount);
        emit Withdraw(msg.sender, market, baseAmount, quoteAmount);
    }

    function _pull(address token, uint256 amount) private {
        (bool ok, bytes memory ret) = token.call(
            abi.encodeWithSelector(0x23b872dd, msg.sender, address(this), amount)
        );
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }

    function _push(address token, uint256 amount) private {
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, msg.sender, amount));
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }

    // ================================================================== maker
    /// @notice Cancel, place and replace orders of `msg.sender` in one transaction.
    /// Each op is one word (LSB first): clientId 0..63 | price 64..95 | size 96..159 |
    /// side 160 (0 bid, 1 ask) | slot 168..175 | kind 176..183 | oldClientId 184..247.
    ///  - OP_CANCEL  (slot, clientId): cancels the order in `slot` if it is live and has
    ///    `clientId`; anything else is a silent no-op (already filled, never placed...).
    ///  - OP_PLACE   (slot, clientId, side, price, size): post-only limit order.
    ///  - OP_REPLACE (slot, oldClientId -> clientId, side, price, size): an in-place amend.
    ///    Keeps time priority when only the size shrinks at the same price and side.
    /// A placement that would cross, finds its slot busy, lacks funds or is malformed is
    /// rejected on its own (OrderRejected); the other ops go through.
    function requote(uint256 market, uint256[] calldata ops) external {
        Ctx memory c = _open(market);
        for (uint256 i = 0; i < ops.length; ++i) {
            uint256 op = ops[i];
            uint256 kind = (op >> 176) & 0xff;
            uint256 slot = (op >> 168) & 0xff;
            if (kind == OP_CANCEL) {
                _cancel(c, slot, op & U64);
            } else if (kind == OP_PLACE) {
                _place(c, slot, op);
            } else {
                _replace(c, slot, op);
            }
        }
        _close(c);
    }

    /// @notice Cancel the live orders of `msg.sender` in the slots set in `slotMask`.
    function cancelSlots(uint256 market, uint256 slotMask) public {
        Ctx memory c = _open(market);
        while (slotMask != 0) {
            uint256 slot = _lsb(slotMask);
            slotMask &= slotMask - 1;
            uint256 key = (market << 32) | (c.trader << 8) | slot;
            uint256 ow = _orders[key];
            if (ow & LIVE != 0) _cancel(c, slot, ow & U64);
        }
        _close(c);
    }

    /// @notice Cancel every live order of `msg.sender` in `market` (scans all 256 slots).
    function cancelAll(uint256 market) external {
        cancelSlots(market, type(uint256).max);
    }

    function _open(uint256 market) private view returns (Ctx memory c) {
        uint256 trader = traderIndex[msg.sender];
        if (trader == 0) revert NoAccount();
        uint256 mkt = _markets[market];
        if (mkt == 0) revert UnknownMarket();
        uint256 acct = _accounts[(trader << 16) | market];
        c = Ctx(market, mkt, trader, acct & U128, (acct >> 128) & U120, mkt, acct);
    }

    function _close(Ctx memory c) private {
        if (c.mkt != c.mkt0) _markets[c.market] = c.mkt;
        uint256 acct = SENTINEL | (c.base << 128) | c.quote;
        if (acct != c.acct0) _accounts[(c.trader << 16) | c.market] = acct;
    }

    function _cancel(Ctx memory c, uint256 slot, uint256 clientId) private {
        uint256 ref = (c.trader << 8) | slot;
        uint256 key = (c.market << 32) | ref;
        uint256 ow = _orders[key];
        if (ow & LIVE == 0 || ow & U64 != clientId) return;
        _unlink(c, ow, ref);
        _release(c, ow);
        _orders[key] = ow & ~LIVE;
        emit OrderCancelled(msg.sender, _info(c.market, slot, ow));
    }

    function _place(Ctx memory c, uint256 slot, uint256 op) private {
        uint256 ref = (c.trader << 8) | slot;
        uint256 key = (c.market << 32) | ref;
        uint256 ow = _orders[key];
        if (ow & LIVE != 0) {
            _reject(c.market, slot, op, REJECT_SLOT_BUSY);
            return;
        }
        _insert(c, slot, op, key, ref);
    }

    function _replace(Ctx memory c, uint256 slot, uint256 op) private {
        uint256 ref = (c.trader << 8) | slot;
        uint256 key = (c.market << 32) | ref;
        uint256 ow = _orders[key];
        uint256 oldId = (op >> 184) & U64;
        if (ow & LIVE == 0) {
            // The old order is gone (filled, cancelled or never placed): a plain place.
            _insert(c, slot, op, key, ref);
            return;
        }
        if (ow & U64 != oldId) {
            _reject(c.market, slot, op, REJECT_SLOT_BUSY);
            return;
        }
        uint256 side = (op >> 160) & 1;
        uint256 price = (op >> 64) & U32;
        uint256 size = (op >> 96) & U64;
        if (
            side == (ow >> 224) & 1 && price == (ow >> 64) & U32 && size != 0
                && size <= (ow >> 96) & U64
        ) {
            // Same price and side, not larger: amend in place and keep time priority.
            _release(c, ow);
            uint256 amended = (ow & ~(U64 | (U64 << 96))) | (op & U64) | (size << 96);
            _lock(c, amended); // cannot fail: needs no more than was just released
            _orders[key] = amended;
            emit OrderReplaced(msg.sender, _info(c.market, slot, amended) | (oldId << 192));
            return;
        }
        _unlink(c, ow, ref);
        _release(c, ow);
        ow &= ~LIVE;
        uint256 reason = _check(c, op);
        if (reason != 0) {
            _orders[key] = ow;
            emit OrderCancelled(msg.sender, _info(c.market, slot, ow));
            _reject(c.market, slot, op, reason);
            return;
        }
        uint256 nw = _link(c, ref, op);
        _lock(c, nw);
        _orders[key] = nw;
        emit OrderReplaced(msg.sender, _info(c.market, slot, nw) | (oldId << 192));
    }

    /// Place `op` into the free slot at `key`.
    function _insert(Ctx memory c, uint256 slot, uint256 op, uint256 key, uint256 ref) private {
        uint256 reason = _check(c, op);
        if (reason != 0) {
            _reject(c.market, slot, op, reason);
            return;
        }
        uint256 nw = _link(c, ref, op);
        _lock(c, nw);
        _orders[key] = nw;
        emit OrderPlaced(msg.sender, _info(c.market, slot, nw));
    }

    /// 0 if `op` can rest in the book, else the reject reason.
    function _check(Ctx memory c, uint256 op) private view returns (uint256) {
        uint256 price = (op >> 64) & U32;
        uint256 size = (op >> 96) & U64;
        if (price == 0 || price > MAX_TICK || size == 0) return REJECT_BAD_ORDER;
        uint256 isAsk = (op >> 160) & 1;
        if (isAsk == 0) {
            if (c.quote < price * size * (c.mkt & U64)) return REJECT_FUNDS;
        } else if (c.base < size * ((c.mkt >> 64) & U96)) {
            return REJECT_FUNDS;
        }
        if (_crosses(c, isAsk, price)) return REJECT_CROSS;
        return 0;
    }

    function _reject(uint256 market, uint256 slot, uint256 op, uint256 reason) private {
        uint256 info = (op & ((1 << 161) - 1)) | (slot << 168) | (market << 176) | (reason << 192);
        emit OrderRejected(msg.sender, info);
    }

    function _info(uint256 market, uint256 slot, uint256 ow) private pure returns (uint256) {
        return (ow & ((1 << 160) - 1)) | (((ow >> 224) & 1) << 160) | (slot << 168) | (market << 176);
    }

    function _lock(Ctx memory c, uint256 ow) private pure {
        uint256 size = (ow >> 96) & U64;
        if ((ow >> 224) & 1 == 0) {
            c.quote -= ((ow >> 64) & U32) * size * (c.mkt & U64);
        } else {
            c.base -= size * ((c.mkt >> 64) & U96);
        }
    }

    function _release(Ctx memory c, uint256 ow) private pure {
        uint256 size = (ow >> 96) & U64;
        if ((ow >> 224) & 1 == 0) {
            c.quote += ((ow >> 64) & U32) * size * (c.mkt & U64);
        } else {
            c.base += size * ((c.mkt >> 64) & U96);
        }
    }

    // ================================================================== book structure
    function _sideKey(uint256 market, uint256 isAsk) private pure returns (uint256) {
        return (market << 33) | (isAsk << 32);
    }

    /// Append order `ref` (described by op) at the tail of its level; returns the order word.
    function _link(Ctx memory c, uint256 ref, uint256 op) private returns (uint256) {
        uint256 isAsk = (op >> 160) & 1;
        uint256 price = (op >> 64) & U32;
        uint256 lk = _sideKey(c.market, isAsk) | (price >> 2);
        uint256 lw = _levels[lk];
        uint256 sh = (price & 3) << 6;
        uint256 head = (lw >> sh) & U32;
        uint256 prev = 0;
        if (head == 0) {
            lw = (lw & ~(U64 << sh)) | (ref << sh) | (ref << (sh + 32));
            _setBit(c, isAsk, price);
        } else {
            prev = (lw >> (sh + 32)) & U32;
            uint256 tk = (c.market << 32) | prev;
            _orders[tk] = _orders[tk] | (ref << 192);
            lw = (lw & ~(U32 << (sh + 32))) | (ref << (sh + 32));
        }
        _levels[lk] = lw;
        return SENTINEL | LIVE | (isAsk << 224) | (prev << 160) | (op & ((1 << 160) - 1));
    }

    /// Remove live order `ow` (reference `ref`) from its level.
    function _unlink(Ctx memory c, uint256 ow, uint256 ref) private {
        uint256 isAsk = (ow >> 224) & 1;
        uint256 price = (ow >> 64) & U32;
        uint256 lk = _sideKey(c.market, isAsk) | (price >> 2);
        uint256 lw = _levels[lk];
        uint256 sh = (price & 3) << 6;
        uint256 head = (lw >> sh) & U32;
        uint256 tail = (lw >> (sh + 32)) & U32;
        uint256 prev = (ow >> 160) & U32;
        uint256 next = (ow >> 192) & U32;
        if (head == ref) {
            // The next order's prev pointer goes stale; it is only read for non-head orders.
            head = next;
        } else {
            uint256 pk = (c.market << 32) | prev;
            _orders[pk] = (_orders[pk] & ~(U32 << 192)) | (next << 192);
            if (next != 0) {
                uint256 nk = (c.market << 32) | next;
                _orders[nk] = (_orders[nk] & ~(U32 << 160)) | (prev << 160);
            } else {
                tail = prev;
            }
        }
        // An emptied level keeps its stale tail so the word never returns to zero.
        _levels[lk] = (lw & ~(U64 << sh)) | (head << sh) | (tail << (sh + 32));
        if (head == 0) _clearBit(c, isAsk, price);
    }

    function _setBit(Ctx memory c, uint256 isAsk, uint256 price) private {
        uint256 bk = _sideKey(c.market, isAsk) | (price / TPW);
        _bitmaps[bk] = _bitmaps[bk] | SENTINEL | (1 << (price % TPW));
        uint256 m = c.mkt;
        if (isAsk == 0) {
            if (price > (m >> 160) & U32) m = (m & ~(U32 << 160)) | (price << 160);
            m += 1 << 224;
        } else {
            if (price < (m >> 192) & U32) m = (m & ~(U32 << 192)) | (price << 192);
            m += 1 << 240;
        }
        c.mkt = m;
    }

    function _clearBit(Ctx memory c, uint256 isAsk, uint256 price) private {
        uint256 bk = _sideKey(c.market, isAsk) | (price / TPW);
        uint256 bit = price % TPW;
        uint256 word = _bitmaps[bk] & ~(1 << bit);
        _bitmaps[bk] = word;
        word &= ~SENTINEL;
        uint256 m = c.mkt;
        uint256 base = price - bit;
        if (isAsk == 0) {
            m -= 1 << 224;
            uint256 best = (m >> 160) & U32;
            if ((m >> 224) & U16 == 0) {
                best = 0;
            } else if (price == best) {
                uint256 below = word & ((1 << bit) - 1);
                best = below != 0 ? base + _msb(below) : (base == 0 ? 0 : base - 1);
            }
            m = (m & ~(U32 << 160)) | (best << 160);
        } else {
            m -= 1 << 240;
            uint256 best = (m >> 192) & U32;
            if (m >> 240 == 0) {
                best = NO_ASK;
            } else if (price == best) {
                uint256 above = bit == 254 ? 0 : word & ~((2 << bit) - 1);
                best = above != 0 ? base + _lsb(above) : base + TPW;
            }
            m = (m & ~(U32 << 192)) | (best << 192);
        }
        c.mkt = m;
    }

    /// Does a post-only order at `price` on side `isAsk` cross the other side?
    /// Tightens the opposite best-price hint while looking. Conservative (true) when the
    /// scan gives up after MAX_SCAN_WORDS empty words.
    function _crosses(Ctx memory c, uint256 isAsk, uint256 price) private view returns (bool) {
        uint256 m = c.mkt;
        if (isAsk == 0) {
            if (m >> 240 == 0) return false;
            uint256 best = (m >> 192) & U32;
            if (price < best) return false;
            (bool found, uint256 t) = _scanUp(_sideKey(c.market, 1), best, price);
            c.mkt = (m & ~(U32 << 192)) | (t << 192);
            return found || t <= price;
        } else {
            if ((m >> 224) & U16 == 0) return false;
            uint256 best = (m >> 160) & U32;
            if (price > best) return false;
            (bool found, uint256 t) = _scanDown(_sideKey(c.market, 0), best, price);
            c.mkt = (m & ~(U32 << 160)) | (t << 160);
            return found || t >= price;
        }
    }

    /// Lowest set tick in [from, to]. Returns (true, tick) or (false, a lower bound for the
    /// lowest set tick: to + 1 when all of [from, to] was scanned, less if the scan gave up).
    function _scanUp(uint256 sideKey, uint256 from, uint256 to) private view returns (bool, uint256) {
        uint256 w = from / TPW;
        uint256 bit = from % TPW;
        for (uint256 n = 0; n < MAX_SCAN_WORDS; ++n) {
            uint256 word = _bitmaps[sideKey | w] & ~SENTINEL & ~((1 << bit) - 1);
            if (word != 0) {
                uint256 t = w * TPW + _lsb(word);
                return t <= to ? (true, t) : (false, t);
            }
            ++w;
            bit = 0;
            if (w * TPW > to) return (false, to + 1);
        }
        return (false, w * TPW);
    }

    /// Highest set tick in [to, from]. Returns (true, tick) or (false, an upper bound for the
    /// highest set tick: to - 1 when all of [to, from] was scanned, more if the scan gave up).
    function _scanDown(uint256 sideKey, uint256 from, uint256 to) private view returns (bool, uint256) {
        uint256 w = from / TPW;
        uint256 bit = from % TPW;
        for (uint256 n = 0; n < MAX_SCAN_WORDS; ++n) {
            uint256 word = _bitmaps[sideKey | w] & ~SENTINEL & ((2 << bit) - 1);
            if (word != 0) {
                uint256 t = w * TPW + _msb(word);
                return t >= to ? (true, t) : (false, t);
            }
            if (w == 0 || w * TPW <= to) return (false, to - 1);
            --w;
            bit = TPW - 1;
        }
        return (false, w * TPW + TPW - 1);
    }

    // ================================================================== taker
    /// @notice Immediate-or-cancel order against the book, price-time priority.
    /// `side` 0 buys (takes asks up to `limitPrice`), 1 sells (takes bids down to it).
    /// Settles from the caller's account in `market`; stops early when the account cannot
    /// pay for more. A resting order of the caller met on the way is cancelled (self-trade
    /// prevention). Returns lots filled and quote units paid or received.
    function take(uint256 market, uint256 side, uint256 limitPrice, uint256 size)
        external
        returns (uint256 filled, uint256 quoteAmount)
    {
        if (side > 1) revert BadSide();
        if (limitPrice > MAX_TICK) limitPrice = MAX_TICK;
        if (limitPrice == 0) limitPrice = 1;
        Ctx memory c = _open(market);
        uint256 makerSide = 1 - side;
        uint256 sk = _sideKey(market, makerSide);
        uint256 left = size;
        while (left != 0) {
            uint256 m = c.mkt;
            uint256 t;
            bool found;
            if (side == 0) {
                if (m >> 240 == 0) break;
                uint256 best = (m >> 192) & U32;
                if (best > limitPrice) break;
                (found, t) = _scanUp(sk, best, limitPrice);
                c.mkt = (m & ~(U32 << 192)) | (t << 192);
            } else {
                if ((m >> 224) & U16 == 0) break;
                uint256 best = (m >> 160) & U32;
                if (best < limitPrice) break;
                (found, t) = _scanDown(sk, best, limitPrice);
                c.mkt = (m & ~(U32 << 160)) | (t << 160);
            }
            if (!found) {
                if (side == 0 ? t > limitPrice : t < limitPrice) break;
                continue; // the scan gave up part way: go on from the tightened hint
            }
            uint256 got;
            uint256 paid;
            bool stop;
            (got, paid, stop) = _takeLevel(c, makerSide, t, left);
            left -= got;
            filled += got;
            quoteAmount += paid;
            if (stop) break;
        }
        _close(c);
    }

    /// Take up to `want` lots at tick `t`; returns (lots, quote units, taker ran out of funds).
    function _takeLevel(Ctx memory c, uint256 makerSide, uint256 t, uint256 want)
        private
        returns (uint256 got, uint256 paid, bool broke)
    {
        uint256 lk = _sideKey(c.market, makerSide) | (t >> 2);
        uint256 lw = _levels[lk];
        uint256 sh = (t & 3) << 6;
        uint256 head = (lw >> sh) & U32;
        uint256 unitQuote = t * (c.mkt & U64);
        uint256 unitBase = (c.mkt >> 64) & U96;
        while (head != 0 && got < want) {
            uint256 ok = (c.market << 32) | head;
            uint256 ow = _orders[ok];
            uint256 avail = (ow >> 96) & U64;
            uint256 makerTrader = head >> 8;
            if (makerTrader == c.trader) {
                // Self-trade prevention: cancel our own resting order.
                _release(c, ow);
                ow &= ~LIVE;
                _orders[ok] = ow;
                emit OrderCancelled(msg.sender, _info(c.market, head & 0xff, ow));
                head = (ow >> 192) & U32;
                continue;
            }
            uint256 q = want - got;
            if (q > avail) q = avail;
            // What the taker can afford.
            uint256 cap = makerSide == 1 ? c.quote / unitQuote : c.base / unitBase;
            if (q > cap) {
                q = cap;
                broke = true;
                if (q == 0) break;
            }
            uint256 qa = q * unitQuote;
            uint256 ba = q * unitBase;
            uint256 ak = (makerTrader << 16) | c.market;
            uint256 acct = _accounts[ak];
            if (makerSide == 1) {
                // Maker sold base (already locked) for quote; taker pays quote, gets base.
                acct += qa;
                c.quote -= qa;
                c.base += ba;
            } else {
                acct += ba << 128;
                c.base -= ba;
                c.quote += qa;
            }
            _accounts[ak] = acct;
            avail -= q;
            got += q;
            paid += qa;
            ow = (ow & ~(U64 << 96)) | (avail << 96);
            uint256 info = _info(c.market, head & 0xff, ow);
            // A Fill reports the lots traded in `size` and the maker's remainder in `extra`.
            info = (info & ~(U64 << 96)) | (q << 96) | (avail << 192);
            if (avail == 0) {
                ow &= ~LIVE;
                _orders[ok] = ow;
                head = (ow >> 192) & U32;
            } else {
                _orders[ok] = ow;
            }
            emit Fill(traderAddress[makerTrader], msg.sender, info);
            if (broke) break;
        }
        _levels[lk] = (lw & ~(U32 << sh)) | (head << sh);
        if (head == 0) _clearBit(c, makerSide, t);
    }

    // ================================================================== views
    function getMarket(uint256 market)
        external
        view
        returns (
            address base,
            address quote,
            uint256 tickValue,
            uint256 lotUnits,
            uint256 bestBidHint,
            uint256 bestAskHint,
            uint256 bidLevels,
            uint256 askLevels
        )
    {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        return (
            baseToken[market],
            quoteToken[market],
            m & U64,
            (m >> 64) & U96,
            (m >> 160) & U32,
            (m >> 192) & U32,
            (m >> 224) & U16,
            m >> 240
        );
    }

    /// Free (unlocked) balances of `owner` in `market`, in token base units.
    function freeBalances(address owner, uint256 market) public view returns (uint256 base, uint256 quote) {
        uint256 acct = _accounts[(traderIndex[owner] << 16) | market];
        return ((acct >> 128) & U120, acct & U128);
    }

    /// Free and locked balances of `owner` in `market` (scans the 256 order slots).
    function balances(address owner, uint256 market)
        external
        view
        returns (uint256 baseFree, uint256 quoteFree, uint256 baseLocked, uint256 quoteLocked)
    {
        (baseFree, quoteFree) = freeBalances(owner, market);
        uint256 m = _markets[market];
        uint256 trader = traderIndex[owner];
        if (trader == 0) return (baseFree, quoteFree, 0, 0);
        for (uint256 slot = 0; slot < 256; ++slot) {
            uint256 ow = _orders[(market << 32) | (trader << 8) | slot];
            if (ow & LIVE == 0) continue;
            uint256 size = (ow >> 96) & U64;
            if ((ow >> 224) & 1 == 0) quoteLocked += ((ow >> 64) & U32) * size * (m & U64);
            else baseLocked += size * ((m >> 64) & U96);
        }
    }

    function getOrder(address owner, uint256 market, uint256 slot)
        external
        view
        returns (bool live, uint256 clientId, uint256 side, uint256 price, uint256 size)
    {
        uint256 ow = _orders[(market << 32) | (traderIndex[owner] << 8) | (slot & 0xff)];
        return (ow & LIVE != 0, ow & U64, (ow >> 224) & 1, (ow >> 64) & U32, (ow >> 96) & U64);
    }

    /// Live orders of `owner` in `market`, each packed like an event `info` word.
    function openOrders(address owner, uint256 market) external view returns (uint256[] memory out) {
        uint256 trader = traderIndex[owner];
        out = new uint256[](256);
        uint256 n = 0;
        if (trader != 0) {
            for (uint256 slot = 0; slot < 256; ++slot) {
                uint256 ow = _orders[(market << 32) | (trader << 8) | slot];
                if (ow & LIVE != 0) out[n++] = _info(market, slot, ow);
            }
        }
        assembly ("memory-safe") {
            mstore(out, n)
        }
    }

    /// Up to `maxLevels` levels of one side from the best price: ticks, total lots, orders.
    function depth(uint256 market, uint256 side, uint256 maxLevels)
        external
        view
        returns (uint256[] memory prices, uint256[] memory sizes, uint256[] memory counts)
    {
        uint256 m = _markets[market];
        if (m == 0) revert UnknownMarket();
        prices = new uint256[](maxLevels);
        sizes = new uint256[](maxLevels);
        counts = new uint256[](maxLevels);
        uint256 sk = _sideKey(market, side);
        uint256 n = 0;
        uint256 left = side == 0 ? (m >> 224) & U16 : m >> 240;
        uint256 t = side == 0 ? (m >> 160) & U32 : (m >> 192) & U32;
        while (n < maxLevels && left != 0) {
            bool found;
            if (side == 0) {
                (found, t) = _scanDown(sk, t, 1);
            } else {
                (found, t) = _scanUp(sk, t, MAX_TICK);
            }
            if (!found) {
                if (side == 0 ? t == 0 : t > MAX_TICK) break;
                continue;
            }
            uint256 lw = _levels[sk | (t >> 2)];
            uint256 ref = (lw >> ((t & 3) << 6)) & U32;
            while (ref != 0) {
                uint256 ow = _orders[(market << 32) | ref];
                sizes[n] += (ow >> 96) & U64;
                counts[n] += 1;
                ref = (ow >> 192) & U32;
            }
            prices[n++] = t;
            --left;
            if (side == 0) {
                if (t == 1) break;
                --t;
            } else {
                ++t;
            }
        }
        assembly ("memory-safe") {
            mstore(prices, n)
            mstore(sizes, n)
            mstore(counts, n)
        }
    }

    // ================================================================== bit helpers
    function _lsb(uint256 x) private pure returns (uint256 r) {
        unchecked {
            if (x & U128 == 0) { r += 128; x >>= 128; }
            if (x & U64 == 0) { r += 64; x >>= 64; }
            if (x & U32 == 0) { r += 32; x >>= 32; }
            if (x & U16 == 0) { r += 16; x >>= 16; }
            if (x & 0xff == 0) { r += 8; x >>= 8; }
            if (x & 0xf == 0) { r += 4; x >>= 4; }
            if (x & 0x3 == 0) { r += 2; x >>= 2; }
            if (x & 0x1 == 0) { r += 1; }
        }
    }

    function _msb(uint256 x) private pure returns (uint256 r) {
        unchecked {
            if (x >> 128 != 0) { r += 128; x >>= 128; }
            if (x >> 64 != 0) { r += 64; x >>= 64; }
            if (x >> 32 != 0) { r += 32; x >>= 32; }
            if (x >> 16 != 0) { r += 16; x >>= 16; }
            if (x >> 8 != 0) { r += 8; x >>= 8; }
            if (x >> 4 != 0) { r += 4; x >>= 4; }
            if (x >> 2 != 0) { r += 2; x >>= 2; }
            if (x >> 1 != 0) { r += 1; }
        }
    }
}
