// Service Bus namespace and the queues between the stages (shared/model.py, QUEUES), each
// with its `<queue>-poison` twin where the app dead-letters refused messages with their reason.
// Entra ID only: local (SAS key) authentication is disabled, so no connection string works.

@description('Name of the Service Bus namespace.')
param name string

@description('Region of the namespace.')
param location string

@description('Tags for the namespace.')
param tags object = {}

@description('How many deliveries before Service Bus moves a message to the queue\'s dead-letter queue.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 10

@description('Duplicate detection window (ISO 8601 duration): a repeated MessageId (the idempotency key) within it is dropped by the broker.')
param duplicateDetectionWindow string = 'PT10M'

@description('How long unconsumed work waits before it is dead-lettered (ISO 8601 duration).')
param messageTimeToLive string = 'P14D'

@description('How long refused messages wait in a -poison queue before they move to its dead-letter queue.')
param poisonMessageTimeToLive string = 'P30D'

@description('Principal id of the app identity.')
param appPrincipalId string

@description('Optional operator principal given send rights (replay from the CLI enqueues on notifications).')
param operatorPrincipalId string = ''

@description('Type of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Log Analytics workspace for the namespace\'s resource logs; empty: none.')
param workspaceId string = ''

// tests/unit/test_infra.py checks both lists against shared.model.QUEUES.
var workQueues = [
  'poll-jobs'
  'erp-events'
  'notifications'
  'callbacks'
]
var poisonQueues = [
  'poll-jobs-poison'
  'erp-events-poison'
  'notifications-poison'
  'callbacks-poison'
]

var appRoles = [
  {
    role: 'Azure Service Bus Data Sender' // enqueue between stages, dead-letter to -poison
    id: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  }
  {
    role: 'Azure Service Bus Data Receiver' // the queue triggers
    id: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  }
]

// Built-in role: Azure Service Bus Data Sender (operator replay).
var dataSenderRoleId = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    // Standard: duplicate detection and scheduled messages (the app's delayed retries); Basic has neither.
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// No Service Bus sessions yet: the Slack pacing design may add session-enabled queues (one
// session id per Slack channel) later. requiresSession cannot be changed on an existing
// queue, so that would be a new queue, not an edit of these.
resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for queue in workQueues: {
  parent: namespace
  name: queue
  properties: {
    // The MessageId is the idempotency key (shared/storage/bus.py): the broker drops repeats
    // within the window, before the Table Storage claim decides for good.
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    requiresSession: false
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    // The longest lock Service Bus allows; host.json renews it for up to five minutes.
    lockDuration: 'PT5M'
    defaultMessageTimeToLive: messageTimeToLive
  }
}]

// Nothing consumes these: an operator reads them (Service Bus Explorer) and replays the jobs.
resource poison 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for queue in poisonQueues: {
  parent: namespace
  name: queue
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    requiresSession: false
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    lockDuration: 'PT5M'
    defaultMessageTimeToLive: poisonMessageTimeToLive
  }
}]

resource appRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for assignment in appRoles: {
  name: guid(namespace.id, appPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.id))
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'ml-connector app: ${assignment.role}'
  }
}]

resource operatorSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(namespace.id, operatorPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSenderRoleId))
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSenderRoleId) // Azure Service Bus Data Sender
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'ml-connector operator: replay from the CLI'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(workspaceId)) {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output name string = namespace.name
output id string = namespace.id
// The host name the SDK and the trigger connect to (ServiceBusConnection__fullyQualifiedNamespace),
// taken from the endpoint (https://<name>.servicebus.windows.net:443/) so that sovereign clouds
// get their own suffix.
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '/')[2], ':')[0]
output workQueueNames array = workQueues
output poisonQueueNames array = poisonQueues
