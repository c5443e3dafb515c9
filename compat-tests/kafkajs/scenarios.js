// KafkaJS scenarios against a Switchyard broker, one per run:
//
//   node scenarios.js SCENARIO BOOTSTRAP TOPIC
//
// Each prints one JSON object with what it saw (compat-tests/clients/test_kafkajs.py checks
// it) and exits 0, or prints the error and exits 1. KafkaJS comes from the pinned lockfile,
// installed by compat-tests/clients/run.sh (NODE_PATH points at it).
'use strict'

const { Kafka, logLevel, CompressionTypes, ConfigResourceTypes } = require('kafkajs')

const [scenario, bootstrap, topic] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: `switchyard-kafkajs-${scenario}`,
  brokers: bootstrap.split(','),
  logLevel: logLevel.NOTHING,
  retry: { retries: 10 },
})

async function withAdmin(work) {
  const admin = kafka.admin()
  await admin.connect()
  try {
    return await work(admin)
  } finally {
    await admin.disconnect()
  }
}

async function produce(count, { compression = CompressionTypes.None, prefix = 'm' } = {}) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  try {
    const messages = []
    for (let i = 0; i < count; i++) {
      messages.push({ key: `k${i}`, value: `${prefix}-${i}` })
    }
    const sent = await producer.send({ topic, compression, messages })
    return sent.map((r) => ({ partition: r.partition, errorCode: r.errorCode }))
  } finally {
    await producer.disconnect()
  }
}

// Consume with `groupId` until `count` messages came, committing each one explicitly; returns
// the values in arrival order.
async function consume(groupId, count) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 })
  await consumer.connect()
  const values = []
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`consumed ${values.length} of ${count}`)),
        60000,
      )
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            values.push(message.value.toString())
            const next = (BigInt(message.offset) + 1n).toString()
            await consumer.commitOffsets([{ topic, partition, offset: next }])
            if (values.length >= count) {
              clearTimeout(timer)
              resolve()
            }
          },
        })
        .catch(reject)
    })
  } finally {
    await consumer.disconnect()
  }
  return values
}

const scenarios = {
  // Topic and cluster administration.
  async admin() {
    return withAdmin(async (admin) => {
      const created = await admin.createTopics({
        topics: [{ topic, numPartitions: 3, replicationFactor: -1 }],
        waitForLeaders: true,
      })
      const again = await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] })
      const listed = (await admin.listTopics()).includes(topic)
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
      const cluster = await admin.describeCluster()
      await admin.deleteTopics({ topics: [topic] })
      const afterDelete = (await admin.listTopics()).includes(topic)
      return {
        created,
        again,
        listed,
        partitions: metadata.topics[0].partitions.length,
        leaders: metadata.topics[0].partitions.every((p) => p.leader >= 0),
        brokers: cluster.brokers.map((b) => b.nodeId).sort(),
        controller: cluster.controller,
        clusterId: cluster.clusterId,
        afterDelete,
      }
    })
  },

  // Idempotent produce (gzip too), a group consuming and committing, and a new member of
  // the group resuming from the committed offsets.
  async 'produce-consume'() {
    await withAdmin((admin) =>
      admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true }),
    )
    const plain = await produce(10)
    const gzip = await produce(10, { compression: CompressionTypes.GZIP, prefix: 'gz' })
    const groupId = `${topic}-group`
    const first = await consume(groupId, 20)
    const committed = await withAdmin((admin) => admin.fetchOffsets({ groupId, topics: [topic] }))
    await produce(5, { prefix: 'later' })
    const resumed = await consume(groupId, 5)
    return {
      produced: [...plain, ...gzip],
      first: first.sort(),
      committed: committed[0].partitions
        .map((p) => Number(p.offset))
        .reduce((a, b) => a + b, 0),
      resumed: resumed.sort(),
    }
  },

  // Group administration: describe, list, delete.
  async 'group-admin'() {
    await withAdmin((admin) =>
      admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }),
    )
    await produce(3)
    const groupId = `${topic}-group`
    await consume(groupId, 3)
    return withAdmin(async (admin) => {
      const described = await admin.describeGroups([groupId])
      const listed = (await admin.listGroups()).groups.map((g) => g.groupId)
      const deleted = await admin.deleteGroups([groupId])
      const listedAfter = (await admin.listGroups()).groups.map((g) => g.groupId)
      return {
        state: described.groups[0].state,
        protocolType: described.groups[0].protocolType,
        listed: listed.includes(groupId),
        deleted: deleted.map((d) => d.errorCode),
        listedAfter: listedAfter.includes(groupId),
      }
    })
  },

  // Transactions: a committed, an aborted and a committed transaction (the last one with
  // offsets of a group, sendOffsets); a read_committed group consumer sees the committed
  // messages only, and the group's offsets are the transaction's.
  async transactions() {
    await withAdmin((admin) =>
      admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true }),
    )
    const producer = kafka.producer({
      transactionalId: `${topic}-txn`,
      idempotent: true,
      maxInFlightRequests: 1,
    })
    await producer.connect()
    const offsetsGroup = `${topic}-offsets`
    try {
      const rounds = [
        ['tc', 'commit'],
        ['ta', 'abort'],
        ['tc2', 'commit'],
      ]
      for (const [prefix, end] of rounds) {
        const transaction = await producer.transaction()
        const messages = []
        for (let i = 0; i < 5; i++) {
          messages.push({ key: `k${i}`, value: `${prefix}-${i}` })
        }
        await transaction.send({ topic, messages })
        if (prefix === 'tc2') {
          await transaction.sendOffsets({
            consumerGroupId: offsetsGroup,
            topics: [{ topic, partitions: [{ partition: 0, offset: '3' }] }],
          })
        }
        await (end === 'commit' ? transaction.commit() : transaction.abort())
      }
    } finally {
      await producer.disconnect()
    }
    const read = await consume(`${topic}-group`, 10)
    const offsets = await withAdmin((admin) =>
      admin.fetchOffsets({ groupId: offsetsGroup, topics: [topic] }),
    )
    return {
      read: read.sort(),
      offsets: offsets[0].partitions
        .map((p) => [p.partition, p.offset])
        .sort((a, b) => a[0] - b[0]),
    }
  },

  // The day-2 admin APIs: CreatePartitions, AlterConfigs/DescribeConfigs, DeleteRecords.
  async 'day-two'() {
    await withAdmin((admin) =>
      admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }),
    )
    await produce(10)
    return withAdmin(async (admin) => {
      await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] })
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
      await admin.alterConfigs({
        validateOnly: false,
        resources: [
          {
            type: ConfigResourceTypes.TOPIC,
            name: topic,
            configEntries: [{ name: 'retention.ms', value: '3600000' }],
          },
        ],
      })
      const configs = await admin.describeConfigs({
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
        includeSynonyms: false,
      })
      const partition0 = (await admin.fetchTopicOffsets(topic)).find((p) => p.partition === 0)
      await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '4' }] })
      const after = (await admin.fetchTopicOffsets(topic)).find((p) => p.partition === 0)
      return {
        partitions: metadata.topics[0].partitions.length,
        retention: configs.resources[0].configEntries[0].configValue,
        before: [partition0.low, partition0.high],
        after: [after.low, after.high],
      }
    })
  },
}

scenarios[scenario]()
  .then((result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`)
    process.exit(0)
  })
  .catch((error) => {
    process.stderr.write(`${scenario} failed: ${error.stack || error}\n`)
    process.exit(1)
  })
